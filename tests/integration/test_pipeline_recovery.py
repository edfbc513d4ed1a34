"""Recovery of the labelling pipeline's work on real Postgres, run in-process: a dead worker's work
is taken back; lost work is re-created; attempt caps end items instead of looping; errors that no
retry cures are recorded against the clips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pipeline_jobs import clip_count, job_state, prediction_rows, submit, take, unit_key, units
from sqlalchemy import delete, select, update

from packsight.models.db import session_scope
from packsight.models.tables.base import utcnow
from packsight.models.tables.clips import Prediction
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.work import UnitKind, WorkUnit
from packsight.pipeline import stages
from packsight.pipeline.context import Context
from packsight.pipeline.embedded import drive
from packsight.pipeline.sweeper import Sweeper
from packsight.settings import get_settings

pytestmark = pytest.mark.integration


def test_the_sweeper_takes_back_the_work_of_a_dead_worker(ctx: Context) -> None:
    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    take(ctx, unit.id, "killed-worker", seconds_ago=60)
    report = Sweeper(ctx).sweep()
    assert report.dead == 1
    (back,) = [u for u in units(ctx, job_id) if u.id == unit.id]
    assert back.state == "pending" and back.lease is None and back.failures == 1
    assert back.last_error is not None
    assert "worker was lost while decoding this video" in back.last_error
    drive(ctx, job_id=job_id)
    assert job_state(ctx, job_id)[0] == "succeeded"


def test_a_unit_that_keeps_killing_its_worker_fails_its_item_after_the_cap(
    ctx: Context,
) -> None:
    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    key = unit_key(ctx, unit)
    for attempt in range(ctx.settings.max_attempts):
        take(ctx, unit.id, f"worker-{attempt}", seconds_ago=60)
        Sweeper(ctx).sweep()
    drive(ctx, job_id=job_id)
    state, items = job_state(ctx, job_id)
    assert state == "partially_failed"
    item_state, error = items[key]
    assert item_state == "failed"
    assert error is not None
    assert "gave up after 2 attempts" in error and "worker was lost" in error


def test_unexpected_errors_are_retried_then_recorded_against_the_clips(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model version names an adapter that is not there: every delivery of a label unit
    # raises while loading the model, an error no clip is to blame for but no retry cures.
    monkeypatch.setenv("PACKSIGHT_ADAPTER", str(ctx.settings.data_dir / "no-such-adapter"))
    get_settings.cache_clear()
    ctx = Context(get_settings())
    job_id = submit(ctx)
    drive(ctx, job_id=job_id)
    state, items = job_state(ctx, job_id)
    assert state == "failed"
    assert all(
        error is not None and "clips could not be labelled" in error for _, error in items.values()
    )
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        version = job.model_version_id
        errors = session.scalars(
            select(Prediction.error).where(Prediction.model_version_id == version)
        ).all()
    assert len(errors) == clip_count(ctx, job_id)
    assert all(
        e is not None and "gave up after 2 attempts" in e and "adapter_config.json" in e
        for e in errors
    )


def test_lost_labelling_work_is_recreated_by_the_sweeper(ctx: Context) -> None:
    job_id = submit(ctx)
    for unit in units(ctx, job_id, UnitKind.SAMPLE):
        stages.run(ctx, unit.id)  # sampled; their label units are recorded
    assert units(ctx, job_id, UnitKind.LABEL)
    db = ctx.settings.resolved_database_url
    with session_scope(db) as session:  # the work is lost, and nothing happened for a while
        session.execute(delete(WorkUnit).where(WorkUnit.job_id == job_id))
        session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id)
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    assert Sweeper(ctx).sweep().recreated == 2
    drive(ctx, job_id=job_id)
    assert job_state(ctx, job_id)[0] == "succeeded"
    assert len(prediction_rows(ctx, job_id)) == clip_count(ctx, job_id)
