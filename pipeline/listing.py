"""Listing a large job's source into items in the background: a chunk of items (with their
sampling units) and the cursor that says how far the listing got commit together, so a listing
cut off anywhere resumes without losing or repeating a key."""

from __future__ import annotations

from itertools import islice

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.models.jobs import add_items, settle_job
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.work import UnitRef, finish_unit
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import top_up
from packsight.pipeline.submission import CHUNK
from packsight.pipeline.units import Lease
from packsight.storage.base import BucketNotFoundError
from packsight.video.decode import VIDEO_EXTENSIONS, is_video_key


def list_source(ctx: Context, unit: UnitRef, lease: Lease) -> None:
    job = ctx.transaction(lambda s: s.get_one(Job, unit.job_id))
    if "keys" in unit.payload:
        keys: list[str] = unit.payload["keys"]
        start = int(unit.cursor or 0)
        while start < len(keys):
            chunk = keys[start : start + CHUNK]
            start += len(chunk)
            _record_chunk(ctx, lease, job.id, chunk, cursor=str(start))
    else:
        prefix: str = unit.payload["prefix"]
        listing = ctx.storage.list_objects(job.bucket, prefix, start_after=unit.cursor or "")
        try:
            while scanned := list(islice(listing, CHUNK)):
                videos = [info.key for info in scanned if is_video_key(info.key)]
                _record_chunk(ctx, lease, job.id, videos, cursor=scanned[-1].key)
        except BucketNotFoundError as exc:
            error = f"listing stopped: {exc}"
            ctx.transaction(lambda s: _end(s, unit, lease.token, error=error))
            return
    ctx.transaction(lambda s: _end(s, unit, lease.token, error=None))


def _record_chunk(ctx: Context, lease: Lease, job_id: str, keys: list[str], *, cursor: str) -> None:
    def record(session: Session) -> None:
        lease.save(session, cursor=cursor)  # fenced: a superseded delivery records nothing
        add_items(session, job_id=job_id, keys=keys)

    ctx.transaction(record)
    top_up(ctx)  # the first items start while the rest is listed


def _end(session: Session, unit: UnitRef, lease: str | None, *, error: str | None) -> None:
    if lease is not None:
        finish_unit(session, unit.id, lease)
    job = session.get_one(Job, unit.job_id, with_for_update=True)
    job.listed = True
    if (
        error is None
        and session.scalar(select(JobItem.id).where(JobItem.job_id == job.id).limit(1)) is None
    ):
        where = f"{job.bucket}/{job.prefix}" if job.prefix else job.bucket
        error = f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {where!r}"
    job.error = error
    session.flush()
    settle_job(session, job_id=job.id)


def give_up_listing(session: Session, unit: UnitRef, error: str) -> None:
    """The listing cannot go on: the job ends with the items it has, and says why."""
    _end(session, unit, None, error=f"listing stopped: {error}")
