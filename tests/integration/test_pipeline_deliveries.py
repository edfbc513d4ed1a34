"""Deliveries of the labelling pipeline's work on real Postgres, run in-process: a job is driven to
its end from the database alone; duplicate, superseded and stale deliveries change nothing; a
delivery past its time bound lets its unit go."""

from __future__ import annotations

import pytest
from pipeline_jobs import clip_count, job_state, prediction_rows, submit, take, unit_key, units

from packsight.models.db import session_scope
from packsight.models.tables.base import utcnow
from packsight.models.tables.work import UnitKind
from packsight.models.work import LeaseLostError, claim_unit, finish_unit
from packsight.pipeline import stages
from packsight.pipeline.context import Context
from packsight.pipeline.embedded import drive

pytestmark = pytest.mark.integration


def test_a_job_is_driven_to_its_end_from_the_database(ctx: Context) -> None:
    job_id = submit(ctx)
    assert [u.kind for u in units(ctx, job_id)] == [UnitKind.SAMPLE] * 2
    drive(ctx, job_id=job_id)
    state, items = job_state(ctx, job_id)
    assert state == "succeeded" and all(s == "succeeded" for s, _ in items.values())
    rows = prediction_rows(ctx, job_id)
    assert len(rows) == clip_count(ctx, job_id) > 0
    assert len({clip for clip, _ in rows}) == len(rows)
    assert units(ctx, job_id) == []  # finished work leaves nothing behind


def test_a_copy_of_a_message_whose_unit_is_held_does_nothing(ctx: Context) -> None:
    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    take(ctx, unit.id, "live-holder")  # a live delivery, heartbeat fresh
    stages.run(ctx, unit.id)  # e.g. redelivered early by a visibility timeout
    (after,) = [u for u in units(ctx, job_id) if u.id == unit.id]
    assert after.lease == "live-holder" and after.state == "running"
    assert job_state(ctx, job_id)[1][unit_key(ctx, unit)] == ("queued", None)


def test_a_stale_holder_is_superseded_and_cannot_record_anything(ctx: Context) -> None:
    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    take(ctx, unit.id, "stale-holder", seconds_ago=60)  # older than stale_after_s (30)
    stages.run(ctx, unit.id)  # a new delivery takes it over and samples the video
    with pytest.raises(LeaseLostError), session_scope(ctx.settings.resolved_database_url) as s:
        finish_unit(s, unit.id, "stale-holder")  # the old holder's late outcome is refused
    drive(ctx, job_id=job_id)
    assert job_state(ctx, job_id)[0] == "succeeded"
    rows = prediction_rows(ctx, job_id)
    assert len(rows) == len({clip for clip, _ in rows}) == clip_count(ctx, job_id)


def test_a_delivery_running_past_its_bound_stops_holding_its_unit(ctx: Context) -> None:
    """A hung stage keeps its heartbeat thread alive; past the bound the heartbeats stop, so the
    sweeper can hand the unit to another worker."""
    import time

    import harness

    from packsight.pipeline.units import Lease
    from packsight.workers.broker import publisher_for

    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    with harness.redis_server() as broker:
        settings = ctx.settings.model_copy(update={"broker_url": broker.url, "stale_after_s": 1})
        worker = Context(settings, publisher_for(settings))  # not embedded: heartbeats run
        lease = Lease(worker, unit.id, max_s=1.0)
        take_with = lease.token
        with session_scope(settings.resolved_database_url) as session:
            claim_unit(session, unit.id, lease=take_with, stale_before=utcnow())
        with lease.kept_alive():
            deadline = time.monotonic() + 120
            while not lease.lost:
                assert time.monotonic() < deadline, "the lease was never given up"
                time.sleep(0.05)
        (held,) = [u for u in units(ctx, job_id) if u.id == unit.id]
        assert held.lease == take_with  # nobody else took it yet: the sweeper will
        with pytest.raises(LeaseLostError):
            lease.check()
