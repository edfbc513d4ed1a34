"""What the labelling pipeline labels, on real Postgres, run in-process: a good label is never
overwritten; videos whose clip ids would collide fail alone; labels are reused only under the
same frame settings."""

from __future__ import annotations

import pytest
from pipeline_jobs import clip_count, job_state, prediction_rows, submit, units
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.jobs import job_counts
from packsight.models.predictions import ClipOutcome, upsert_predictions
from packsight.models.tables.clips import Clip, Prediction
from packsight.models.tables.jobs import Job
from packsight.models.tables.work import UnitKind
from packsight.pipeline.context import Context
from packsight.pipeline.embedded import drive
from packsight.pipeline.submission import JobRequest, submit_job
from packsight.settings import get_settings

pytestmark = pytest.mark.integration


def test_a_label_is_never_replaced_by_an_error(ctx: Context) -> None:
    job_id = submit(ctx)
    drive(ctx, job_id=job_id)
    clip_id, _ = prediction_rows(ctx, job_id)[0]
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        version = job.model_version_id
        upsert_predictions(
            session,
            model_version_id=version,
            outcomes=[ClipOutcome(clip_id=clip_id, error="late duplicate that failed")],
        )
    with session_scope(ctx.settings.resolved_database_url) as session:
        row = session.scalars(
            select(Prediction).where(
                Prediction.clip_id == clip_id, Prediction.model_version_id == version
            )
        ).one()
        assert row.status == "ok" and row.error is None
        count = session.scalar(select(func.count()).where(Prediction.clip_id == clip_id))
        assert count == 1


def test_videos_whose_clip_ids_would_collide_fail_alone(ctx: Context) -> None:
    """One subject and session in two folders of one bucket: the second video's clips would
    take the first one's ids, so it fails with a message naming both, and nothing merges."""
    import shutil

    root = ctx.settings.resolved_local_root / "videos"
    source = next(root.rglob("*.mp4"))
    for site in ("site-a", "site-b"):
        target = root / site / "U0201" / "kinect" / "S0100.mp4"
        target.parent.mkdir(parents=True)
        shutil.copy(source, target)
    job_id = submit_job(ctx, JobRequest("videos", prefix="site-")).job_id
    drive(ctx, job_id=job_id)
    state, items = job_state(ctx, job_id)
    assert state == "partially_failed"
    assert items["site-a/U0201/kinect/S0100.mp4"] == ("succeeded", None)
    failed, error = items["site-b/U0201/kinect/S0100.mp4"]
    assert error is not None
    assert failed == "failed" and "U0201_S0100_t" in error and "site-a/U0201" in error

    # The first one is moved away: the second takes its ids over.
    (root / "site-a" / "U0201" / "kinect" / "S0100.mp4").unlink()
    moved = submit_job(ctx, JobRequest("videos", keys=("site-b/U0201/kinect/S0100.mp4",)))
    drive(ctx, job_id=moved.job_id)
    assert job_state(ctx, moved.job_id)[0] == "succeeded"


def test_labels_are_reused_only_for_the_same_frame_settings(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = submit(ctx)
    drive(ctx, job_id=first)
    again = submit(ctx)  # same model version, same frames: nothing to label
    assert units(ctx, again, UnitKind.LABEL) == []
    drive(ctx, job_id=again)
    assert job_state(ctx, again)[0] == "succeeded"

    monkeypatch.setenv("PACKSIGHT_FRAME_MAX_SIDE", "56")
    get_settings.cache_clear()
    smaller = Context(get_settings())
    other = submit(smaller)  # other frames: other clips, labelled anew
    drive(smaller, job_id=other)
    assert job_state(smaller, other)[0] == "succeeded"
    with session_scope(ctx.settings.resolved_database_url) as session:
        samplings = session.scalars(select(Clip.sampling).distinct()).all()
    assert len(samplings) >= 2 and any("/56px/" in s for s in samplings)
    # The job sees its own clips only (not the other sampling's, though the version and the
    # videos are the same), each labelled once.
    assert clip_count(smaller, other) == clip_count(ctx, first)
    assert len(prediction_rows(smaller, other)) == clip_count(smaller, other)
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, other)
        assert job is not None
        counts = job_counts(session, job=job).clips
    assert counts["total"] == counts["labelled"] == clip_count(smaller, other)


def test_a_job_samples_with_the_sampler_the_settings_name(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The luma sampler through the whole pipeline: the same windows, clips of a sampling of
    their own, each labelled once."""
    from packsight.video.sampling import SAMPLERS

    first = submit(ctx)
    drive(ctx, job_id=first)
    luma_sampler = next(name for name in SAMPLERS if name != ctx.settings.sampler)
    monkeypatch.setenv("PACKSIGHT_SAMPLER", luma_sampler)
    get_settings.cache_clear()
    luma = Context(get_settings())
    other = submit(luma)
    drive(luma, job_id=other)
    assert job_state(luma, other)[0] == "succeeded"
    assert clip_count(luma, other) == clip_count(ctx, first)
    assert len(prediction_rows(luma, other)) == clip_count(luma, other)
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, other)
        assert job is not None and job.params["frames"]["sampler"] == luma_sampler
        samplings = set(session.scalars(select(Clip.sampling).distinct()))
    assert any(s.startswith(f"{luma_sampler}/") for s in samplings)
