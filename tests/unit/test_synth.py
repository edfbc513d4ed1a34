"""The synthetic archive: layout, determinism, OpenPack-style CSVs and a consistent manifest."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TypedDict

import decord
import numpy as np
import pytest

from packsight.labels.taxonomy import load_taxonomy
from packsight.video.sampling import motion_magnitude
from packsight.video.synth import CSV_COLUMNS, SyntheticVideo, write_synthetic_archive


class Sizes(TypedDict):  # write_synthetic_archive's frame size and video lengths
    size: tuple[int, int]
    min_seconds: float
    max_seconds: float


SMALL: Sizes = {"size": (160, 120), "min_seconds": 6, "max_seconds": 10}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticVideo]]:
    out = tmp_path_factory.mktemp("synth")
    return out, write_synthetic_archive(out, videos=3, seed=11, **SMALL)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _decode_gray(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path), width=80, height=60)
    return reader.get_batch(list(range(len(reader)))).asnumpy().mean(axis=-1)


def test_layout_and_naming_follow_openpack(archive) -> None:
    out, videos = archive
    assert [(v.user, v.session) for v in videos] == [
        ("U0101", "S0100"),
        ("U0102", "S0101"),
        ("U0103", "S0102"),
    ]
    for video in videos:
        assert video.key == f"{video.user}/video/{video.user}_{video.session}.mp4"
        assert video.path == out / video.key and video.path.stat().st_size > 0
        csv_path = out / video.user / "annotation" / "openpack-operations" / f"{video.session}.csv"
        assert csv_path.is_file()


def test_ninth_video_wraps_to_the_first_subject(tmp_path: Path) -> None:
    videos = write_synthetic_archive(
        tmp_path, videos=9, size=(64, 48), min_seconds=0.2, max_seconds=0.2
    )
    assert [v.user for v in videos][7:] == ["U0108", "U0101"]
    assert videos[8].session == "S0108"


def test_same_seed_gives_identical_annotations_and_frames(tmp_path: Path, archive) -> None:
    out, videos = archive
    again = write_synthetic_archive(tmp_path, videos=3, seed=11, **SMALL)
    for first, second in zip(videos, again, strict=True):
        assert first.segments == second.segments
        relative = Path(first.user) / "annotation" / "openpack-operations" / f"{first.session}.csv"
        assert (out / relative).read_bytes() == (tmp_path / relative).read_bytes()
    first_manifest = json.loads((out / "manifest.json").read_text())
    assert first_manifest == json.loads((tmp_path / "manifest.json").read_text())
    np.testing.assert_array_equal(_decode_gray(videos[0].path), _decode_gray(again[0].path))


def test_another_seed_gives_another_archive(tmp_path: Path, archive) -> None:
    _, videos = archive
    other = write_synthetic_archive(tmp_path, videos=1, seed=12, **SMALL)
    assert other[0].segments != videos[0].segments


def test_csv_columns_and_iso_timestamps(archive) -> None:
    out, videos = archive
    taxonomy = load_taxonomy("assignment")
    manifest = {v["key"]: v for v in json.loads((out / "manifest.json").read_text())["videos"]}
    for video in videos:
        path = out / video.user / "annotation" / "openpack-operations" / f"{video.session}.csv"
        assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
        rows = _rows(path)
        # Background time has no row, as in OpenPack; every other segment has one.
        worked = [s for s in video.segments if s[0] != taxonomy.background]
        assert len(rows) == len(worked) > 0
        video_start = datetime.fromisoformat(manifest[video.key]["video_start"])
        for row, (operation, start, end) in zip(rows, worked, strict=True):
            begin, finish = datetime.fromisoformat(row["start"]), datetime.fromisoformat(row["end"])
            assert begin.utcoffset() == timedelta(hours=9) and begin < finish
            assert row["start"][10] == " " and len(row["start"].split(".")[1]) == len(
                "437000+09:00"
            )
            assert (begin - video_start).total_seconds() == pytest.approx(start / video.fps)
            assert (finish - video_start).total_seconds() == pytest.approx(end / video.fps)
            assert row["operation"] == operation and row["actions"] == ""
            assert int(row["id"]) == taxonomy.index(operation) * 100 + 100
            assert (row["user"], row["session"]) == (video.user, video.session)
            assert int(row["box"]) >= 1
        assert len({row["uuid"] for row in rows}) == len(rows)


def test_taxonomy_ids_are_used_when_present(tmp_path: Path) -> None:
    openpack = load_taxonomy("openpack")
    (video,) = write_synthetic_archive(tmp_path, videos=1, taxonomy=openpack, **SMALL)
    rows = _rows(tmp_path / "U0101" / "annotation" / "openpack-operations" / "S0100.csv")
    assert rows and all(int(r["id"]) == openpack.ids[r["operation"]] for r in rows)
    assert all(op in openpack.operations for op, _, _ in video.segments)


def test_manifest_matches_the_decoded_videos(archive) -> None:
    out, videos = archive
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 11 and len(manifest["videos"]) == len(videos)
    for entry, video in zip(manifest["videos"], videos, strict=True):
        reader = decord.VideoReader(str(out / entry["key"]))
        assert len(reader) == entry["frame_count"] == video.frame_count
        assert reader.get_avg_fps() == entry["fps"] == 25
        assert reader[0].shape == (120, 160, 3)
        assert 6 * 25 <= video.frame_count <= 10 * 25
        assert datetime.fromisoformat(entry["video_start"]).tzinfo is not None
        segments = [(s["operation"], s["start_frame"], s["end_frame"]) for s in entry["segments"]]
        assert segments == video.segments
        # Segments tile the video: contiguous, from the first frame to the last.
        assert segments[0][1] == 0 and segments[-1][2] == video.frame_count
        assert all(a[2] == b[1] and a[1] < a[2] for a, b in pairwise(segments))


def test_operations_follow_the_procedure_with_realistic_durations(archive) -> None:
    _, videos = archive
    taxonomy = load_taxonomy("assignment")
    steps = taxonomy.procedure
    for video in videos:
        worked = [op for op, _, _ in video.segments if op != taxonomy.background]
        for a, b in pairwise(worked):
            assert steps.index(b) == (steps.index(a) + 1) % len(steps)
        for _, start, end in video.segments[:-1]:  # the last one is cut by the recording's end
            assert 2 * 25 <= end - start <= 8 * 25


def test_motion_jumps_at_operation_boundaries(archive) -> None:
    _, videos = archive
    for video in videos:
        motion = motion_magnitude(_decode_gray(video.path))
        typical = np.median(motion[1:])
        for _, start, _ in video.segments[1:]:
            # The box changes (or appears) at a boundary, so the frame difference spikes there.
            assert motion[start] > 4 * typical


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even size"):
        write_synthetic_archive(tmp_path, videos=1, size=(161, 120))
    with pytest.raises(ValueError, match="min_seconds"):
        write_synthetic_archive(tmp_path, videos=1, min_seconds=5, max_seconds=2)
