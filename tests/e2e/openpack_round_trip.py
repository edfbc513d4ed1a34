"""A labelled job's timelines through the real commands: `packsight results --format openpack`,
then `packsight labels import` of that folder, which must give back exactly the exported
segments as labels of every video."""

from __future__ import annotations

from pathlib import Path

from cli_runs import run
from sqlalchemy import select

from packsight.models.db import session_scope
from packsight.models.labels import video_labels
from packsight.models.tables.clips import Video
from packsight.models.tables.jobs import JobItem
from packsight.pipeline.results import find_job
from packsight.pipeline.timelines import video_timeline

BUCKET = "reimported"


def assert_openpack_round_trip(cwd: Path, env: dict[str, str], database: Path) -> None:
    out = cwd / "openpack"
    exported = run(["results", "--format", "openpack", "--out", str(out)], cwd, env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    sessions = out / "sessions.csv"
    assert f"--sessions {sessions} --bucket archive --unverified" in exported.stderr
    imported = run(
        ["labels", "import", str(out), "--sessions", str(sessions), "--bucket", BUCKET,
         "--unverified"],
        cwd, env,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr

    with session_scope(f"sqlite:///{database}") as session:
        job = find_job(session)
        assert job is not None
        videos = session.scalars(
            select(Video)
            .join(JobItem, JobItem.video_id == Video.id)
            .where(JobItem.job_id == job.id)
        ).all()
        assert videos
        for video in videos:
            segments = video_timeline(
                session, video, model_version_id=job.model_version_id
            ).segments
            labels = video_labels(session, bucket=BUCKET, video_key=video.key)
            assert [(s.operation, s.start_frame, s.end_frame) for s in segments] == [
                (label.operation, label.start_frame, label.end_frame) for label in labels
            ], video.key
            assert (labels[0].subject, labels[0].session) == (video.subject, video.session)
            assert not any(label.verified for label in labels)
