"""A pipeline test's job as the database holds it: submitting one, reading back its units, items,
clips and predictions, and taking one of its units as a given delivery."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from packsight.models.db import session_scope
from packsight.models.jobs import job_clips
from packsight.models.tables.base import utcnow
from packsight.models.tables.clips import Prediction
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.work import WorkUnit
from packsight.models.work import claim_unit
from packsight.pipeline.context import Context
from packsight.pipeline.submission import JobRequest, submit_job


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
        assert job is not None
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
        job = session.get(Job, job_id)
        assert job is not None
        return job.state, {i.key: (i.state, i.error) for i in items}


def clip_count(ctx: Context, job_id: str) -> int:
    with session_scope(ctx.settings.resolved_database_url) as session:
        count = session.scalar(select(func.count()).select_from(job_clips(job_id).subquery()))
    assert count is not None  # COUNT(*) always has its row
    return count


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


def unit_key(ctx: Context, unit: WorkUnit) -> str:
    with session_scope(ctx.settings.resolved_database_url) as session:
        item = session.get(JobItem, unit.item_id)
        assert item is not None
        return item.key
