"""The labelling pipeline's bookkeeping on real Postgres, work run in-process: a job is driven to
its end from the database alone; duplicate, superseded and stale deliveries change nothing; a
dead worker's work is taken back; lost work is re-created; attempt caps end items instead of
looping; a good label is never overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from packsight.models.db import session_scope
from packsight.models.jobs import job_clips, job_counts
from packsight.models.predictions import ClipOutcome, upsert_predictions
from packsight.models.tables import (
    Clip,
    Job,
    JobItem,
    Prediction,
    UnitKind,
    WorkUnit,
    utcnow,
)
from packsight.models.work import LeaseLostError, claim_unit, finish_unit
from packsight.pipeline import stages
from packsight.pipeline.context import Context
from packsight.pipeline.embedded import drive
from packsight.pipeline.submission import JobRequest, submit_job
from packsight.pipeline.sweeper import Sweeper
from packsight.settings import Settings, get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    """Fresh files per test: labels already made for a video would otherwise be reused."""
    from packsight.video.synth import write_synthetic_archive

    root = tmp_path / "local-root"
    write_synthetic_archive(root / "videos", videos=2, seed=7, min_seconds=6, max_seconds=11)
    return root


@pytest.fixture(scope="module")
def pipeline_db(postgres_url: str) -> str:
    from packsight.models.migrate import upgrade_database

    upgrade_database(postgres_url)
    return postgres_url


@pytest.fixture
def settings(
    pipeline_db: str, tiny_model_dir: Path, archive_root: Path, tmp_path: Path, monkeypatch
) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    env = {
        "PACKSIGHT_DATABASE_URL": pipeline_db,
        "PACKSIGHT_STORAGE": "local",
        "PACKSIGHT_LOCAL_ROOT": str(archive_root),
        "PACKSIGHT_DATA_DIR": str(tmp_path),
        "PACKSIGHT_MODEL": str(tiny_model_dir),
        "PACKSIGHT_QUANTIZATION": "none",
        "PACKSIGHT_MAX_ATTEMPTS": "2",
        "PACKSIGHT_STALE_AFTER_S": "30",
        "PACKSIGHT_RETRY_BACKOFF_MAX_S": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PACKSIGHT_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    started = utcnow()
    ctx = Context(settings)  # no publisher: the test runs the work itself
    yield ctx
    # Leave the shared database as found: this test's jobs (with items and units) go.
    with session_scope(settings.resolved_database_url) as session:
        session.execute(delete(Job).where(Job.created_at >= started))


def submit(ctx: Context) -> str:
    return submit_job(ctx, JobRequest("videos", prefix="")).job_id


def units(ctx: Context, job_id: str, kind: str | None = None) -> list[WorkUnit]:
    with session_scope(ctx.settings.resolved_database_url) as session:
        query = select(WorkUnit).where(WorkUnit.job_id == job_id).order_by(WorkUnit.id)
        if kind is not None:
            query = query.where(WorkUnit.kind == kind)
        return list(session.scalars(query))


def prediction_rows(ctx: Context, job_id: str) -> list[tuple[int, str]]:
    """(clip, status) of the job's clips (its items' videos, under its frame settings)."""
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        return list(
            session.execute(
                select(Prediction.clip_id, Prediction.status)
                .where(
                    Prediction.clip_id.in_(job_clips(job_id)),
                    Prediction.model_version_id == job.model_version_id,
                )
                .order_by(Prediction.clip_id)
            ).all()
        )


def job_state(ctx: Context, job_id: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
    with session_scope(ctx.settings.resolved_database_url) as session:
        items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)).all()
        return session.get(Job, job_id).state, {i.key: (i.state, i.error) for i in items}


def clip_count(ctx: Context, job_id: str) -> int:
    with session_scope(ctx.settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(job_clips(job_id).subquery()))


def take(ctx: Context, unit_id: int, lease: str, *, seconds_ago: float = 0) -> None:
    """A delivery `lease` holds the unit, its last heartbeat `seconds_ago`."""
    db = ctx.settings.resolved_database_url
    with session_scope(db) as session:
        assert claim_unit(session, unit_id, lease=lease, stale_before=utcnow()) is not None
        session.execute(
            update(WorkUnit)
            .where(WorkUnit.id == unit_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds_ago))
        )


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


def unit_key(ctx: Context, unit: WorkUnit) -> str:
    with session_scope(ctx.settings.resolved_database_url) as session:
        return session.get(JobItem, unit.item_id).key


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


def test_the_sweeper_takes_back_the_work_of_a_dead_worker(ctx: Context) -> None:
    job_id = submit(ctx)
    unit = units(ctx, job_id, UnitKind.SAMPLE)[0]
    take(ctx, unit.id, "killed-worker", seconds_ago=60)
    report = Sweeper(ctx).sweep()
    assert report.dead == 1
    (back,) = [u for u in units(ctx, job_id) if u.id == unit.id]
    assert back.state == "pending" and back.lease is None and back.failures == 1
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
    assert "gave up after 2 attempts" in error and "worker was lost" in error


def test_unexpected_errors_are_retried_then_recorded_against_the_clips(
    ctx: Context, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # The model version names an adapter that is not there: every delivery of a label unit
    # raises while loading the model, an error no clip is to blame for but no retry cures.
    monkeypatch.setenv("PACKSIGHT_ADAPTER", str(ctx.settings.data_dir / "no-such-adapter"))
    get_settings.cache_clear()
    ctx = Context(get_settings())
    job_id = submit(ctx)
    drive(ctx, job_id=job_id)
    state, items = job_state(ctx, job_id)
    assert state == "failed"
    assert all("clips could not be labelled" in error for _, error in items.values())
    with session_scope(ctx.settings.resolved_database_url) as session:
        version = session.get(Job, job_id).model_version_id
        errors = session.scalars(
            select(Prediction.error).where(Prediction.model_version_id == version)
        ).all()
    assert len(errors) == clip_count(ctx, job_id)
    assert all("gave up after 2 attempts" in e and "adapter_config.json" in e for e in errors)


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


def test_a_label_is_never_replaced_by_an_error(ctx: Context) -> None:
    job_id = submit(ctx)
    drive(ctx, job_id=job_id)
    clip_id, _ = prediction_rows(ctx, job_id)[0]
    with session_scope(ctx.settings.resolved_database_url) as session:
        version = session.get(Job, job_id).model_version_id
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
    assert failed == "failed" and "U0201_S0100_t" in error and "site-a/U0201" in error

    # The first one is moved away: the second takes its ids over.
    (root / "site-a" / "U0201" / "kinect" / "S0100.mp4").unlink()
    moved = submit_job(ctx, JobRequest("videos", keys=("site-b/U0201/kinect/S0100.mp4",)))
    drive(ctx, job_id=moved.job_id)
    assert job_state(ctx, moved.job_id)[0] == "succeeded"


def test_labels_are_reused_only_for_the_same_frame_settings(ctx: Context, monkeypatch) -> None:  # type: ignore[no-untyped-def]
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
        counts = job_counts(session, job=session.get(Job, other)).clips
    assert counts["total"] == counts["labelled"] == clip_count(smaller, other)


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
