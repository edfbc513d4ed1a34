"""One GPU delivery runs on from unit to unit, on real Postgres and Redis with the tiny model: it
adopts waiting label units a task's worth at a time, just before the GPU needs them (units
sampled while it runs included), for up to `gpu_delivery_s`, and records each unit as soon as
its clips are decided, while the GPU goes on; it stops when nothing it runs could be recorded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import harness
import pytest
from labeler_calls import Calls, sampled_job, short_videos, watch_labeler, worker_context
from pipeline_jobs import clip_count, job_state, prediction_rows, submit, units

from packsight.models.tables.work import UnitKind
from packsight.pipeline import stages
from packsight.pipeline.context import Context

pytestmark = pytest.mark.integration

SMALL_TASKS = {"gpu_batch_size": 2, "gpu_task_batches": 1}  # a task: two clips, a unit: 1-2


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    return short_videos(tmp_path)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = watch_labeler(monkeypatch)
    seen.batch_size = 1
    return seen


def test_a_delivery_takes_waiting_units_a_task_at_a_time_until_none_is_left(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url, **SMALL_TASKS)
    job_id, labels = sampled_job(ctx)
    assert len(labels) == 4
    stages.run(worker, labels[0].id)
    assert calls.sizes == [clip_count(ctx, job_id)]  # one delivery, every unit
    assert units(ctx, job_id) == [] and job_state(ctx, job_id)[0] == "succeeded"
    assert len(prediction_rows(ctx, job_id)) == clip_count(ctx, job_id)


def test_with_no_time_to_run_on_a_delivery_takes_one_task(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    tasks = {"gpu_batch_size": 1, "gpu_task_batches": 1}  # a task: no room beside its unit
    worker = worker_context(ctx, redis_url, **tasks, gpu_delivery_s=0)
    job_id, labels = sampled_job(ctx)
    stages.run(worker, labels[0].id)
    assert calls.sizes == [len(labels[0].payload["clip_ids"])]
    left = units(ctx, job_id)
    assert [u.id for u in left] == [u.id for u in labels[1:]]
    assert all(u.lease is None and u.failures == 0 for u in left)


def test_units_sampled_while_a_delivery_runs_join_it(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url)
    job_id = submit(ctx)
    first, *rest = units(ctx, job_id, UnitKind.SAMPLE)
    stages.run(ctx, first.id)
    (label,) = units(ctx, job_id, UnitKind.LABEL)

    def sample_the_rest(_call: int) -> None:  # the delivery has taken what was waiting
        for unit in rest:
            stages.run(ctx, unit.id)

    calls.before = sample_the_rest
    stages.run(worker, label.id)
    assert calls.sizes == [clip_count(ctx, job_id)]
    assert units(ctx, job_id) == [] and job_state(ctx, job_id)[0] == "succeeded"


def test_each_unit_is_recorded_as_soon_as_its_clips_are_decided(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url, **SMALL_TASKS)
    job_id, labels = sampled_job(ctx)
    first_clips = len(labels[0].payload["clip_ids"])
    batches: list[Any] = []
    seen_left: list[set[int]] = []

    def after_batch(results: list[Any]) -> None:
        batches.append(results)
        if len(batches) != first_clips:
            return
        deadline = time.monotonic() + harness.budget(60)
        while labels[0].id in (left := {u.id for u in units(ctx, job_id)}):
            assert time.monotonic() < deadline, "the first unit was not recorded"
            time.sleep(0.05)
        seen_left.append(left)

    calls.after_batch = after_batch
    stages.run(worker, labels[0].id)
    # Recorded while the last unit's clips were still to run.
    assert seen_left and labels[-1].id in seen_left[0]
    assert units(ctx, job_id) == [] and job_state(ctx, job_id)[0] == "succeeded"


def test_a_delivery_failing_midway_keeps_what_it_recorded_and_holds_nothing(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url, **SMALL_TASKS)
    job_id, labels = sampled_job(ctx)
    batches: list[Any] = []

    def fail_on_the_third(results: list[Any]) -> None:
        batches.append(results)
        if len(batches) == 3:  # the helper is preparing the next batch meanwhile
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    calls.after_batch = fail_on_the_third
    stages.run(worker, labels[0].id)
    left = units(ctx, job_id, UnitKind.LABEL)
    # Nothing stays held; what the delivery held and did not record counts the failure; what
    # it had not taken yet is untouched.
    assert left and all(u.lease is None and u.state != "running" for u in left)
    assert any(u.failures == 1 for u in left) and all(u.failures <= 1 for u in left)
    recorded = {clip for clip, _ in prediction_rows(ctx, job_id)}
    for unit in labels:  # each unit either recorded whole, or back in line
        clips = set(unit.payload["clip_ids"])
        assert clips <= recorded or (clips.isdisjoint(recorded) and unit.id in {u.id for u in left})


def test_units_adopted_ahead_go_back_untouched_when_a_batch_before_them_fails(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url, gpu_batch_size=8, gpu_task_batches=1)
    job_id, labels = sampled_job(ctx)  # four units; the delivery adopts them all at once

    def fail_at_once(_results: list[Any]) -> None:  # the helper has drawn the next clip
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    calls.after_batch = fail_at_once
    stages.run(worker, labels[0].id)
    left = {u.id: u for u in units(ctx, job_id, UnitKind.LABEL)}
    assert all(u.lease is None and u.state != "running" for u in left.values())
    # Two clips at most began (the batch that failed, the next one drawn), one unit's or two
    # units': that failure is theirs; the last two units' clips never began.
    assert sorted(u.failures for u in left.values())[-1] == 1
    assert [left[u.id].failures for u in labels[2:]] == [0, 0]


def test_a_delivery_whose_units_were_all_taken_over_stops_its_gpu_work(
    ctx: Context, redis_url: str, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import update

    from packsight.models.db import session_scope
    from packsight.models.tables.work import WorkUnit
    from packsight.pipeline import label_delivery

    deliveries: list[Any] = []
    made = label_delivery._Delivery.__init__

    def watched(self: Any, *args: Any) -> None:
        made(self, *args)
        deliveries.append(self)

    monkeypatch.setattr(label_delivery._Delivery, "__init__", watched)
    worker = worker_context(ctx, redis_url, gpu_batch_size=8, gpu_task_batches=1)
    job_id, labels = sampled_job(ctx)
    batches: list[Any] = []

    def take_everything_over(results: list[Any]) -> None:
        batches.append(results)
        if len(batches) > 1:
            return
        # As if the sweeper and new deliveries had taken every unit this one holds.
        lease = deliveries[0].lease
        with session_scope(ctx.settings.resolved_database_url) as session:
            session.execute(
                update(WorkUnit).where(WorkUnit.lease == lease.token).values(lease="new-holder")
            )
        deadline = time.monotonic() + harness.budget(60)
        while not lease.lost:  # its heartbeat finds them gone
            assert time.monotonic() < deadline, "the heartbeat did not see the takeover"
            time.sleep(0.05)

    calls.after_batch = take_everything_over
    stages.run(worker, labels[0].id)
    assert len(batches) == 1  # of one batch per clip: the rest never ran
    assert clip_count(ctx, job_id) > 2
    left = units(ctx, job_id, UnitKind.LABEL)
    assert left and all(u.lease == "new-holder" and u.failures == 0 for u in left)


def test_a_failed_batch_counts_against_its_own_units_only(
    ctx: Context, redis_url: str, calls: Calls
) -> None:
    worker = worker_context(ctx, redis_url, **SMALL_TASKS)
    job_id, labels = sampled_job(ctx)
    in_order = [(unit.id, clip) for unit in labels for clip in sorted(unit.payload["clip_ids"])]
    batches: list[int] = []

    def fail_the_second() -> None:
        batches.append(1)
        if len(batches) < 2:
            return
        deadline = time.monotonic() + harness.budget(60)
        while calls.sizes[0] < 3:  # the next batch drawn meanwhile, from a unit adopted for it
            assert time.monotonic() < deadline, "the helper drew no next batch"
            time.sleep(0.01)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    calls.in_batch = fail_the_second
    stages.run(worker, labels[0].id)
    left = {u.id: u for u in units(ctx, job_id, UnitKind.LABEL)}
    guilty = in_order[1][0]  # the unit of the second clip, the batch that failed
    assert left[guilty].failures == 1
    assert [u.failures for u in left.values() if u.id != guilty] == [0] * (len(left) - 1)
