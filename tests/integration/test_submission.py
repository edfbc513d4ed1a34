"""Submitting jobs on real Postgres: one transaction records the job, its first items and their
work; large sources are listed in chunks that resume from their cursor; an idempotency key
makes a retried request return the job it already made, even when requests race."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from packsight.models.db import session_scope
from packsight.models.migrate import upgrade_database
from packsight.models.tables.base import utcnow
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.work import UnitKind, WorkUnit
from packsight.pipeline import stages
from packsight.pipeline.context import Context
from packsight.pipeline.submission import (
    CHUNK,
    IdempotencyConflictError,
    JobRequest,
    NothingToLabelError,
    submit_job,
)
from packsight.settings import Settings
from packsight.storage.base import BucketNotFoundError, InvalidKeyError

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(postgres_url: str, tmp_path: Path) -> Iterator[Context]:
    upgrade_database(postgres_url)
    root = tmp_path / "root"
    (root / "archive").mkdir(parents=True)
    settings = Settings(
        database_url=postgres_url, storage="local", local_root=root, data_dir=tmp_path
    )
    started = utcnow()
    yield Context(settings)
    with session_scope(postgres_url) as session:
        session.execute(delete(Job).where(Job.created_at >= started))


def counts(ctx: Context, job_id: str) -> tuple[int, int, dict[str, int]]:
    """(items, distinct keys, units by kind) of a job."""
    with session_scope(ctx.settings.resolved_database_url) as session:
        items = session.scalar(select(func.count()).where(JobItem.job_id == job_id))
        keys = session.scalar(
            select(func.count(func.distinct(JobItem.key))).where(JobItem.job_id == job_id)
        )
        kinds = dict(
            session.execute(
                select(WorkUnit.kind, func.count())
                .where(WorkUnit.job_id == job_id)
                .group_by(WorkUnit.kind)
            ).all()
        )
    assert items is not None and keys is not None  # COUNT always has its row
    return items, keys, kinds


def list_unit(ctx: Context, job_id: str) -> int:
    with session_scope(ctx.settings.resolved_database_url) as session:
        unit_id = session.scalar(
            select(WorkUnit.id).where(WorkUnit.job_id == job_id, WorkUnit.kind == UnitKind.LIST)
        )
    assert unit_id is not None
    return unit_id


def test_a_long_key_list_is_recorded_in_chunks_after_the_request(ctx: Context) -> None:
    keys = tuple(f"station/{n:06d}.mp4" for n in range(CHUNK * 2 + 500))
    submission = submit_job(ctx, JobRequest("archive", keys=keys + keys[:10]))
    assert submission.items == CHUNK and not submission.listed
    assert counts(ctx, submission.job_id) == (CHUNK, CHUNK, {"sample": CHUNK, "list": 1})

    stages.run(ctx, list_unit(ctx, submission.job_id))
    total = len(keys)
    assert counts(ctx, submission.job_id) == (total, total, {"sample": total})
    with session_scope(ctx.settings.resolved_database_url) as session:
        job = session.get(Job, submission.job_id)
        assert job is not None and job.listed


def test_a_prefix_listing_resumes_from_its_cursor(ctx: Context) -> None:
    folder = ctx.settings.resolved_local_root / "archive" / "site"
    folder.mkdir()
    videos = [f"site/{n:05d}.mp4" for n in range(CHUNK + 300)]
    for key in videos:
        (folder.parent / key).touch()
    for n in range(40):
        (folder / f"{n:05d}.txt").touch()  # not videos, in between
    submission = submit_job(ctx, JobRequest("archive", prefix="site/"))
    assert not submission.listed and 0 < submission.items < CHUNK

    # The request listed one chunk; the listing unit goes on from the cursor it left.
    unit_id = list_unit(ctx, submission.job_id)
    with session_scope(ctx.settings.resolved_database_url) as session:
        unit = session.get(WorkUnit, unit_id)
        assert unit is not None
        first_cursor = unit.cursor
    assert first_cursor and first_cursor.startswith("site/")
    stages.run(ctx, unit_id)
    assert counts(ctx, submission.job_id) == (len(videos), len(videos), {"sample": len(videos)})


def test_a_retried_request_returns_the_job_it_made(ctx: Context) -> None:
    (ctx.settings.resolved_local_root / "archive" / "a.mp4").touch()
    request = JobRequest("archive", keys=("a.mp4",))
    first = submit_job(ctx, request, idempotency_key="client-42")
    again = submit_job(ctx, request, idempotency_key="client-42")
    assert first.created and not again.created
    assert again.job_id == first.job_id and again.items == 1
    assert counts(ctx, first.job_id)[0] == 1
    with pytest.raises(IdempotencyConflictError, match="client-42"):
        submit_job(ctx, JobRequest("archive", prefix="other/"), idempotency_key="client-42")


def test_racing_requests_with_one_key_make_one_job(ctx: Context) -> None:
    (ctx.settings.resolved_local_root / "archive" / "a.mp4").touch()
    results, errors = [], []
    barrier = threading.Barrier(4)

    def post() -> None:
        barrier.wait()
        try:
            results.append(
                submit_job(ctx, JobRequest("archive", keys=("a.mp4",)), idempotency_key="race")
            )
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({r.job_id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_bad_sources_record_nothing(ctx: Context) -> None:
    with session_scope(ctx.settings.resolved_database_url) as session:
        before = session.scalar(select(func.count(Job.id)))
    for request, error in (
        (JobRequest("no-such-bucket", prefix="a/"), BucketNotFoundError),
        (JobRequest("archive", prefix="empty/"), NothingToLabelError),
        (JobRequest("archive", keys=("../escape.mp4",)), InvalidKeyError),
        (JobRequest(ctx.settings.artifact_bucket, prefix="frames/"), InvalidKeyError),
    ):
        with pytest.raises(error):
            submit_job(ctx, request)
    with session_scope(ctx.settings.resolved_database_url) as session:
        assert session.scalar(select(func.count(Job.id))) == before


def test_the_broker_holds_a_window_of_messages_however_large_the_job(
    ctx: Context, tmp_path: Path
) -> None:
    import harness
    import redis

    from packsight.workers.broker import publisher_for

    with harness.redis_server() as broker:  # its own: no worker consumes from it
        settings = ctx.settings.model_copy(update={"broker_url": broker.url, "dispatch_window": 50})
        ctx = Context(settings, publisher_for(settings), patient=False)
        keys = tuple(f"station/{n:06d}.mp4" for n in range(CHUNK * 2 + 500))
        submission = submit_job(ctx, JobRequest("archive", keys=keys))
        stages.run(ctx, list_unit(ctx, submission.job_id))  # every item recorded meanwhile
        queued = redis.Redis.from_url(broker.url).llen(settings.queue_cpu)
        assert queued == 50 + 1  # the sampling window, and the listing unit's own message
        with session_scope(settings.resolved_database_url) as session:
            states = dict(
                session.execute(
                    select(WorkUnit.state, func.count())
                    .where(WorkUnit.job_id == submission.job_id)
                    .group_by(WorkUnit.state)
                ).all()
            )
        assert states == {"dispatched": 50, "pending": len(keys) - 50}
