"""The whole path on real services: S3 upload -> POST /v1/jobs -> CPU and GPU Celery workers
-> Postgres -> GET results. Bad files in the same job fail alone, with readable errors."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
import pytest
from app_fixtures import Stack
from harness import S3Endpoint, budget
from sqlalchemy import func, select

from packsight.labels.taxonomy import load_taxonomy
from packsight.models.db import session_scope
from packsight.models.tables.clips import Clip, Prediction
from packsight.models.tables.jobs import Job, JobItem
from packsight.settings import Settings
from packsight.video.decode import split_windows
from packsight.video.synth import SyntheticVideo, write_synthetic_archive

pytestmark = pytest.mark.e2e
BUCKET, PREFIX = "archive", "station-7/2026-11/"


def wait_for_final_state(client: httpx.Client, job_id: str, timeout_s: float = budget(600)) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if body["state"] in ("succeeded", "failed", "partially_failed"):
            return body
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s: {body}")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[SyntheticVideo]:
    return write_synthetic_archive(tmp_path_factory.mktemp("archive"), videos=5, seed=42)


def test_archive_is_labelled_end_to_end(
    stack: Stack, stack_settings: Settings, s3: S3Endpoint, archive: list[SyntheticVideo]
) -> None:
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for video in archive:
        client.upload_file(str(video.path), BUCKET, PREFIX + Path(video.key).name)
    client.put_object(Bucket=BUCKET, Key=PREFIX + "corrupt.mp4", Body=b"\x00\x01garbage" * 999)
    client.put_object(Bucket=BUCKET, Key=PREFIX + "empty.mp4", Body=b"")
    client.put_object(Bucket=BUCKET, Key=PREFIX + "notes.txt", Body=b"not a video")

    with stack.client() as api:
        response = api.post("/v1/jobs", json={"bucket": BUCKET, "prefix": PREFIX})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["items"] == len(archive) + 2  # notes.txt is not a video
        job = wait_for_final_state(api, accepted["job_id"])

        # Every item ended in exactly one final state; the bad files failed alone.
        assert job["state"] == "partially_failed"
        assert job["items"]["succeeded"] == len(archive)
        assert job["items"]["failed"] == 2
        assert sum(job["items"].values()) == accepted["items"]
        errors = {item["key"].removeprefix(PREFIX): item["error"] for item in job["failed_items"]}
        assert set(errors) == {"corrupt.mp4", "empty.mp4"}
        assert "empty" in errors["empty.mp4"]
        assert "corrupt.mp4" in errors["corrupt.mp4"] and "decode" in errors["corrupt.mp4"]

        # Results, read page by page, cover every clip once.
        results, offset = [], 0
        while offset is not None:
            page = api.get(f"/v1/jobs/{job['id']}/results", params={"offset": offset, "limit": 7})
            body = page.raise_for_status().json()
            results += body["items"]
            offset = body["next_offset"]

        # Each labelled video's timeline: ordered segments over its clips (the base model has
        # no prior: they are its raw answers), as JSON and as a PNG.
        first = results[0]
        timeline = api.get(f"/v1/videos/{first['video_id']}/timeline")
        assert timeline.status_code == 200, timeline.text
        shown = timeline.json()
        assert shown["key"] == first["video_key"] and shown["prior"] is False
        assert shown["segments"] == shown["raw_segments"] and shown["segments"]
        ends = [(s["start_frame"], s["end_frame"]) for s in shown["segments"]]
        assert ends[0][0] == 0 and ends[-1][1] == shown["frame_count"]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ends))  # no gaps
        assert sum(s["clips"] for s in shown["segments"]) == len(shown["clips"])
        png = api.get(f"/v1/videos/{first['video_id']}/timeline", params={"format": "png"})
        assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert api.get("/v1/videos/999999999/timeline").status_code == 404

    expected_clips = sum(
        len(split_windows(video.frame_count, video.fps, stack_settings.clip_seconds))
        for video in archive
    )
    assert job["clips"] == {
        "total": expected_clips,
        "labelled": expected_clips,
        "failed": 0,
        "pending": 0,
    }
    assert len(results) == expected_clips
    assert len({r["clip_id"] for r in results}) == expected_clips
    taxonomy = load_taxonomy("assignment")
    for result in results:
        assert result["status"] == "ok"
        assert result["dominant_operation"] in taxonomy.operations
        assert result["anticipated_next_operation"] in taxonomy.operations
        window = result["end_frame"] - result["start_frame"] + 1
        segment = result["temporal_segment"]
        assert 0 <= segment["start_frame"] <= segment["end_frame"] < window
        assert 0.0 < result["confidence"] <= 1.0

    # In Postgres: exactly one prediction row per clip for the job's model version.
    with session_scope(stack_settings.resolved_database_url) as session:
        job_row = session.get(Job, job["id"])
        videos = select(JobItem.video_id).where(JobItem.job_id == job_row.id)
        per_clip = session.execute(
            select(Clip.id, func.count(Prediction.id))
            .outerjoin(
                Prediction,
                (Prediction.clip_id == Clip.id)
                & (Prediction.model_version_id == job_row.model_version_id),
            )
            .where(Clip.video_id.in_(videos))
            .group_by(Clip.id)
        ).all()
    assert len(per_clip) == expected_clips
    assert all(count == 1 for _, count in per_clip)
