"""GPU batches filled across videos, on real Postgres and Redis with the tiny model, delivered
as a worker delivers them (heartbeats running): one delivery labels the waiting label units of
other videos and jobs beside its own, each recorded in its own transaction and kept alive by its
heartbeat; a failed batch counts against every unit in it and they run alone from then on;
a unit taken over meanwhile is left to its new holder; another model version's units are never
adopted; a clip two jobs share is labelled once; in-process, only the job's own units."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from labeler_calls import (
    Calls,
    sampled,
    sampled_job,
    short_videos,
    watch_labeler,
    worker_context,
)
from pipeline_jobs import clip_count, job_state, prediction_rows, submit, units
from sqlalchemy import update

from packsight.models.db import session_scope
from packsight.models.jobs import get_or_create_model_version
from packsight.models.tables.base import utcnow
from packsight.models.tables.jobs import Job
from packsight.models.tables.work import UnitKind, WorkUnit
from packsight.pipeline import stages
from packsight.pipeline.context import Context
from packsight.pipeline.embedded import drive

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(ctx: Context, redis_url: str) -> Context:
    return worker_context(ctx, redis_url)


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    return short_videos(tmp_path)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return watch_labeler(monkeypatch)


def test_one_delivery_fills_its_batches_with_other_videos_clips(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    job_id, labels = sampled_job(ctx)
    assert len(labels) == 4  # one unit per video
    stages.run(worker, labels[0].id)
    assert calls.sizes == [clip_count(ctx, job_id)]  # every video's clips in one stream
    assert units(ctx, job_id) == []
    state, items = job_state(ctx, job_id)
    assert state == "succeeded" and all(s == "succeeded" for s, _ in items.values())
    rows = prediction_rows(ctx, job_id)
    assert len(rows) == len({clip for clip, _ in rows}) == clip_count(ctx, job_id)
    for unit in labels[1:]:  # their own messages, arriving late, find nothing to do
        stages.run(worker, unit.id)
    assert len(calls.sizes) == 1


def test_the_heartbeat_keeps_every_adopted_unit(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    import harness

    job_id, labels = sampled_job(ctx)

    def until_renewed(_call: int) -> None:
        # Called with the units adopted (their heartbeat set then): wait for later ones.
        adopted_at = utcnow()
        deadline = time.monotonic() + harness.budget(60)
        while True:
            held = units(ctx, job_id)
            assert len(held) == 4 and all(u.lease is not None for u in held)
            if all(u.heartbeat_at is not None and u.heartbeat_at > adopted_at for u in held):
                return
            assert time.monotonic() < deadline, "adopted units were not renewed"
            time.sleep(0.1)

    calls.before = until_renewed
    stages.run(worker, labels[0].id)
    assert units(ctx, job_id) == [] and job_state(ctx, job_id)[0] == "succeeded"


def test_a_failed_batch_counts_against_every_unit_in_it_and_they_run_alone(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    job_id, labels = sampled_job(ctx)

    def fail_once() -> None:  # one batch holds every clip: every unit has begun
        calls.in_batch = None
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    calls.in_batch = fail_once
    calls.batch_size = clip_count(ctx, job_id)
    stages.run(worker, labels[0].id)
    after = units(ctx, job_id, UnitKind.LABEL)
    assert [u.id for u in after] == [u.id for u in labels]
    assert all(u.failures == 1 and u.lease is None and u.state == "pending" for u in after)
    assert all("illegal memory access" in (u.last_error or "") for u in after)
    drive(worker, job_id=job_id)  # each unit once more, alone: one call per unit
    assert calls.sizes[1:] == [len(u.payload["clip_ids"]) for u in labels]
    assert job_state(ctx, job_id)[0] == "succeeded"
    assert len(prediction_rows(ctx, job_id)) == clip_count(ctx, job_id)


def test_a_unit_taken_over_meanwhile_is_left_to_its_new_holder(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    job_id, labels = sampled_job(ctx)
    taken = labels[2]

    def take_over(_call: int) -> None:
        # As if this delivery's heartbeats had stopped long enough for the sweeper and a new
        # delivery to take one of its units.
        with session_scope(ctx.settings.resolved_database_url) as session:
            session.execute(
                update(WorkUnit)
                .where(WorkUnit.id == taken.id)
                .values(lease="new-holder", heartbeat_at=utcnow())
            )

    calls.before = take_over
    stages.run(worker, labels[0].id)
    (left,) = units(ctx, job_id)
    assert left.id == taken.id and left.lease == "new-holder" and left.failures == 0
    labelled = {clip for clip, _ in prediction_rows(ctx, job_id)}
    assert labelled.isdisjoint(taken.payload["clip_ids"])
    assert len(labelled) == clip_count(ctx, job_id) - len(taken.payload["clip_ids"])
    _, items = job_state(ctx, job_id)
    assert sorted(s for s, _ in items.values()) == ["inferring"] + ["succeeded"] * 3


def test_units_of_another_model_version_are_not_adopted(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    mine, theirs = submit(ctx), submit(ctx)
    with session_scope(ctx.settings.resolved_database_url) as session:
        other = get_or_create_model_version(
            session, base_model="elsewhere/model", adapter=None, quantization="none", taxonomy="x"
        )
        session.execute(update(Job).where(Job.id == theirs).values(model_version_id=other.id))
    labels = sampled(ctx, mine)
    their_labels = sampled(ctx, theirs)
    stages.run(worker, labels[0].id)
    assert calls.sizes == [clip_count(ctx, mine)]
    assert units(ctx, mine) == []
    assert [u.id for u in units(ctx, theirs)] == [u.id for u in their_labels]
    assert all(u.lease is None for u in units(ctx, theirs))


def test_a_clip_two_jobs_share_is_labelled_once(
    ctx: Context, worker: Context, calls: Calls
) -> None:
    first, second = submit(ctx), submit(ctx)  # the same videos, the same model version
    labels = sampled(ctx, first)
    sampled(ctx, second)
    stages.run(worker, labels[0].id)
    assert calls.sizes == [clip_count(ctx, first)] == [clip_count(ctx, second)]
    for job_id in (first, second):
        assert job_state(ctx, job_id)[0] == "succeeded" and units(ctx, job_id) == []
        assert len(prediction_rows(ctx, job_id)) == clip_count(ctx, job_id)


def test_in_process_only_the_jobs_own_units_are_adopted(ctx: Context, calls: Calls) -> None:
    """Without a broker each job is driven by its own caller, which would not see another
    job's units held by this delivery."""
    mine, theirs = submit(ctx), submit(ctx)
    labels = sampled(ctx, mine)
    their_labels = sampled(ctx, theirs)
    stages.run(ctx, labels[0].id)
    assert calls.sizes == [clip_count(ctx, mine)]
    assert units(ctx, mine) == []
    assert [(u.id, u.lease) for u in units(ctx, theirs)] == [(u.id, None) for u in their_labels]
