"""Ground-truth labels on real Postgres: idempotent import, corrections that split annotation
intervals, `packsight labels import` end to end, and the /v1/labels API on the running stack."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

import httpx
import pytest
from app_fixtures import Stack
from harness import budget

from packsight.labels.annotations import LabelInterval
from packsight.labels.mappings import load_mapping, map_intervals
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.db import session_scope
from packsight.models.labels import LabelError, add_correction, replace_video_labels, video_labels
from packsight.models.migrate import upgrade_database
from packsight.video.synth import write_synthetic_archive

pytestmark = pytest.mark.integration
PACKSIGHT = str(Path(sys.executable).parent / "packsight")


class Sizes(TypedDict):  # write_synthetic_archive's frame size and video lengths
    size: tuple[int, int]
    min_seconds: float
    max_seconds: float


SMALL: Sizes = {"size": (64, 48), "min_seconds": 6, "max_seconds": 10}
TAPE_VIDEO = [LabelInterval("Idle", 0, 50), LabelInterval("Tape", 50, 150)]


@pytest.fixture(scope="module")
def db(postgres_url: str) -> str:
    upgrade_database(postgres_url)
    return postgres_url


def spans(url: str, bucket: str, key: str) -> list[tuple[str, int, int, str]]:
    with session_scope(url) as session:
        rows = video_labels(session, bucket=bucket, video_key=key)
        return [(r.operation, r.start_frame, r.end_frame, r.source) for r in rows]


def import_labels(url: str, bucket: str, key: str, intervals: list[LabelInterval]) -> None:
    with session_scope(url) as session:
        replace_video_labels(
            session, bucket=bucket, video_key=key, taxonomy="assignment", intervals=intervals
        )


def correct(
    url: str,
    bucket: str,
    key: str,
    operation: str,
    start: int,
    end: int,
    taxonomy: str = "assignment",
) -> None:
    with session_scope(url) as session:
        add_correction(
            session,
            bucket=bucket,
            video_key=key,
            operation=operation,
            start_frame=start,
            end_frame=end,
            taxonomy=taxonomy,
        )


def test_reimport_replaces_instead_of_duplicating(db: str) -> None:
    import_labels(db, "idem", "a.mp4", TAPE_VIDEO)
    import_labels(db, "idem", "a.mp4", TAPE_VIDEO)
    assert spans(db, "idem", "a.mp4") == [
        ("Idle", 0, 50, "annotation"),
        ("Tape", 50, 150, "annotation"),
    ]
    import_labels(db, "idem", "a.mp4", [LabelInterval("Pack", 0, 150)])
    assert spans(db, "idem", "a.mp4") == [("Pack", 0, 150, "annotation")]


def test_a_correction_splits_the_interval_and_survives_reimport(db: str) -> None:
    import_labels(db, "split", "a.mp4", TAPE_VIDEO)
    correct(db, "split", "a.mp4", "label", 80, 100)  # inside Tape: splits it
    expected = [
        ("Idle", 0, 50, "annotation"),
        ("Tape", 50, 80, "annotation"),
        ("Label", 80, 100, "human"),
        ("Tape", 100, 150, "annotation"),
    ]
    assert spans(db, "split", "a.mp4") == expected
    import_labels(db, "split", "a.mp4", TAPE_VIDEO)
    assert spans(db, "split", "a.mp4") == expected
    correct(db, "split", "a.mp4", "Wrap", 40, 90)  # over a boundary and the older correction
    assert spans(db, "split", "a.mp4") == [
        ("Idle", 0, 40, "annotation"),
        ("Wrap", 40, 90, "human"),
        ("Label", 90, 100, "human"),
        ("Tape", 100, 150, "annotation"),
    ]


def test_corrections_are_validated(db: str) -> None:
    import_labels(db, "valid", "a.mp4", TAPE_VIDEO)
    with pytest.raises(LabelError, match="unknown operation 'Dance'"):
        correct(db, "valid", "a.mp4", "Dance", 0, 10)
    with pytest.raises(LabelError, match="start_frame < end_frame"):
        correct(db, "valid", "a.mp4", "Tape", 10, 10)
    with (
        pytest.raises(LabelError, match="taxonomy 'assignment', not 'openpack'"),
        session_scope(db) as session,
    ):
        add_correction(
            session,
            bucket="valid",
            video_key="a.mp4",
            operation="Null",
            start_frame=0,
            end_frame=5,
            taxonomy="openpack",
        )
    assert spans(db, "valid", "a.mp4") == [
        ("Idle", 0, 50, "annotation"),
        ("Tape", 50, 150, "annotation"),
    ]


def run(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_DATABASE_URL"] = url
    return subprocess.run(
        [PACKSIGHT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=budget(120)
    )


def test_cli_imports_an_archive_idempotently(db: str, tmp_path: Path) -> None:
    written = write_synthetic_archive(tmp_path / "archive", videos=3, seed=7, **SMALL)
    args = ["labels", "import", "archive", "--bucket", "cli", "--prefix", "site-a/"]
    for _ in range(2):
        result = run(args, db, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "imported 3 videos into bucket 'cli' as assignment" in result.stdout
    for video in written:
        assert f"site-a/{video.key}\t{len(video.segments)} intervals" in result.stdout
        stored = spans(db, "cli", f"site-a/{video.key}")
        assert stored == [(op, s, e, "annotation") for op, s, e in video.segments]

    # One broken file is reported and sets the exit code; the others are still imported.
    broken = tmp_path / "archive" / written[1].user / "annotation" / "openpack-operations"
    (broken / f"{written[1].session}.csv").write_text("uuid,operation\n")
    result = run([*args[:4], "cli-broken"], db, tmp_path)
    assert result.returncode == 1
    assert f"{written[1].session}.csv: missing column(s) start, end" in result.stderr
    assert "imported 2 videos" in result.stdout
    assert spans(db, "cli-broken", written[1].key) == []
    assert len(spans(db, "cli-broken", written[0].key)) == len(written[0].segments)


def test_cli_maps_openpack_annotations_with_a_sessions_csv(db: str, tmp_path: Path) -> None:
    openpack = load_taxonomy("openpack")
    written = write_synthetic_archive(tmp_path, videos=2, seed=3, taxonomy=openpack, **SMALL)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").unlink()  # the sessions table must come from the CSV
    with (tmp_path / "sessions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "session", "video_key", "video_start", "fps", "frame_count"])
        for v in manifest["videos"]:
            writer.writerow(
                [v["user"], v["session"], v["key"], v["video_start"], v["fps"], v["frame_count"]]
            )
    args = ["labels", "import", ".", "--bucket", "mapped", "--sessions", "sessions.csv"]
    result = run([*args, "--map", "openpack-to-assignment"], db, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    mapping = load_mapping("openpack-to-assignment")
    for video in written:
        expected = map_intervals([LabelInterval(*seg) for seg in video.segments], mapping)
        assert spans(db, "mapped", video.key) == [
            (i.operation, i.start_frame, i.end_frame, "annotation") for i in expected
        ]

    # Re-importing unmapped replaces the labels in the source taxonomy; once a human has
    # corrected a video in one taxonomy, importing it in another is refused (for that video).
    result = run(args, db, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert spans(db, "mapped", written[0].key) == [
        (*seg, "annotation") for seg in written[0].segments
    ]
    correct(db, "mapped", written[1].key, "Close Box", 0, 5, taxonomy="openpack")
    result = run([*args, "--map", "openpack-to-assignment"], db, tmp_path)
    assert result.returncode == 1 and "one video's labels share one taxonomy" in result.stderr
    assert "imported 1 videos" in result.stdout


@pytest.fixture(scope="module")
def labelled_video(stack: Stack) -> tuple[str, str]:
    # Into the stack's own database, where its API reads.
    import_labels(
        stack.env["PACKSIGHT_DATABASE_URL"], "api-labels", "U0101/video/a.mp4", TAPE_VIDEO
    )
    return "api-labels", "U0101/video/a.mp4"


def test_api_stores_a_correction_and_returns_the_split_intervals(
    stack: Stack, labelled_video: tuple[str, str]
) -> None:
    bucket, key = labelled_video
    body = {
        "bucket": bucket,
        "video_key": key,
        "operation": "label",
        "start_frame": 80,
        "end_frame": 100,
    }
    with stack.client() as api:
        created = api.post("/v1/labels", json=body)
        assert created.status_code == 201, created.text
        label = created.json()
        assert (label["operation"], label["source"], label["verified"]) == ("Label", "human", True)
        assert (label["taxonomy"], label["start_frame"], label["end_frame"]) == (
            "assignment",
            80,
            100,
        )
        listed = api.get("/v1/labels", params={"bucket": bucket, "video_key": key})
    assert listed.status_code == 200
    got = [(x["operation"], x["start_frame"], x["end_frame"]) for x in listed.json()["labels"]]
    assert got == [("Idle", 0, 50), ("Tape", 50, 80), ("Label", 80, 100), ("Tape", 100, 150)]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"operation": "Dance"}, "unknown operation 'Dance'"),
        ({"start_frame": 20, "end_frame": 20}, "start_frame must be less than end_frame"),
        ({"start_frame": 30, "end_frame": 20}, "start_frame must be less than end_frame"),
        ({"start_frame": -1}, "start_frame"),
        ({"taxonomy": "openpack", "operation": "Null"}, "share one taxonomy"),
        ({"taxonomy": "../etc/x.json"}, "taxonomy"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_corrections_get_422(
    stack: Stack, labelled_video: tuple[str, str], change: dict[str, object], needle: str
) -> None:
    bucket, key = labelled_video
    body = {
        "bucket": bucket,
        "video_key": key,
        "operation": "Tape",
        "start_frame": 0,
        "end_frame": 10,
    } | change
    with stack.client() as api:
        before = api.get("/v1/labels", params={"bucket": bucket, "video_key": key}).json()
        response = api.post("/v1/labels", json=body)
        assert response.status_code == 422, response.text
        assert needle in response.text
        after = api.get("/v1/labels", params={"bucket": bucket, "video_key": key}).json()
    assert after == before


@pytest.mark.parametrize("header", [None, "Bearer wrong-token"])
def test_labels_need_the_bearer_token(stack: Stack, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    body = {"bucket": "b", "video_key": "k", "operation": "Tape", "start_frame": 0, "end_frame": 1}
    url = f"{stack.api_url}/v1/labels"
    assert httpx.post(url, json=body, headers=headers).status_code == 401
    assert (
        httpx.get(url, params={"bucket": "b", "video_key": "k"}, headers=headers).status_code == 401
    )
