"""Job and item lifecycle. Every state change is a guarded UPDATE, so a redelivered task
cannot move an item backwards or count it twice; job counts are derived, never incremented.
An item or job is settled under a row lock in the transaction that records an outcome, so the
last outcome to commit always sees all the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Select, and_, func, select, update
from sqlalchemy.orm import Session

from packsight.models.db import upsert_insert
from packsight.models.tables.base import utcnow
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus
from packsight.models.tables.jobs import (
    FINAL_ITEM_STATES,
    FINAL_JOB_STATES,
    ItemState,
    Job,
    JobItem,
    JobState,
)
from packsight.models.tables.versions import ModelVersion
from packsight.models.tables.work import UnitKind
from packsight.models.work import add_units


@dataclass
class JobCounts:
    items: dict[str, int] = field(default_factory=dict)
    clips: dict[str, int] = field(default_factory=dict)

    @property
    def items_total(self) -> int:
        return sum(self.items.values())


def model_version_name(
    *, base_model: str, adapter: str | None, quantization: str, taxonomy: str
) -> str:
    return f"{base_model}@{adapter or 'base'}:{quantization}:{taxonomy}"


def get_or_create_model_version(
    session: Session, *, base_model: str, adapter: str | None, quantization: str, taxonomy: str
) -> ModelVersion:
    name = model_version_name(
        base_model=base_model, adapter=adapter, quantization=quantization, taxonomy=taxonomy
    )
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        # Two first jobs of a new model may race here: the unique name lets one insert win and
        # the other read it, instead of failing.
        values = {
            "name": name,
            "base_model": base_model,
            "adapter_uri": adapter,
            "quantization": quantization,
            "taxonomy": taxonomy,
            "is_serving": False,
            "created_at": utcnow(),
        }
        insert = upsert_insert(session)(ModelVersion).values(values)
        session.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        version = session.scalars(select(ModelVersion).where(ModelVersion.name == name)).one()
    return version


def add_items(session: Session, *, job_id: str, keys: Sequence[str]) -> list[int]:
    """Add the keys not yet in the job as queued items, each with its sampling unit; returns
    the new items' ids. Adding a key twice (a resumed listing) changes nothing."""
    if not keys:
        return []
    now = utcnow()
    rows = [
        {"job_id": job_id, "key": key, "state": ItemState.QUEUED, "attempts": 0, "updated_at": now}
        for key in dict.fromkeys(keys)
    ]
    stmt = upsert_insert(session)(JobItem).values(rows)
    stmt = stmt.on_conflict_do_nothing(index_elements=["job_id", "key"]).returning(JobItem.id)
    ids = list(session.scalars(stmt))
    add_units(session, UnitKind.SAMPLE, ({"job_id": job_id, "item_id": i} for i in ids))
    return ids


def set_item_state(
    session: Session, *, item_id: int, state: str, error: str | None = None, **values: object
) -> bool:
    """Move an item to `state` unless it already ended; False when nothing changed."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(JobItem)
            .where(JobItem.id == item_id, JobItem.state.not_in(FINAL_ITEM_STATES))
            .values(state=state, error=error, updated_at=utcnow(), **values)
        ),
    )
    if state == ItemState.DECODING:
        session.execute(
            update(Job)
            .where(Job.id == select(JobItem.job_id).where(JobItem.id == item_id).scalar_subquery())
            .where(Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING)
        )
    return result.rowcount > 0


def item_clips(item: JobItem) -> Select:
    """The ids of an item's clips: its video's, sampled under the item's frame settings."""
    return select(Clip.id).where(Clip.video_id == item.video_id, Clip.sampling == item.sampling)


def item_outcomes(session: Session, *, item: JobItem, model_version_id: int) -> dict[str, int]:
    """Outcomes of an item's clips under a model version, by prediction status."""
    return dict(
        session.execute(
            select(Prediction.status, func.count())
            .where(
                Prediction.clip_id.in_(item_clips(item)),
                Prediction.model_version_id == model_version_id,
            )
            .group_by(Prediction.status)
        ).all()
    )


def settle_item(session: Session, *, item_id: int) -> bool:
    """End the item if it is inferring and every clip has an outcome, then its job if that was
    the last open item. True when the item ended."""
    item = session.get(JobItem, item_id, with_for_update=True, populate_existing=True)
    if item is None or item.state != ItemState.INFERRING:
        return False
    job = session.get_one(Job, item.job_id)
    outcomes = item_outcomes(session, item=item, model_version_id=job.model_version_id)
    if item.clip_count is None or sum(outcomes.values()) < item.clip_count:
        return False
    failed = outcomes.get(PredictionStatus.FAILED, 0)
    if failed:
        error = f"{failed} of {item.clip_count} clips could not be labelled (see results)"
        set_item_state(session, item_id=item.id, state=ItemState.FAILED, error=error)
    else:
        set_item_state(session, item_id=item.id, state=ItemState.SUCCEEDED)
    settle_job(session, job_id=item.job_id)
    return True


def fail_item(session: Session, *, item_id: int, error: str) -> None:
    """End the item as failed (a fact about its video), then its job if it was the last."""
    session.get(JobItem, item_id, with_for_update=True)
    if set_item_state(session, item_id=item_id, state=ItemState.FAILED, error=error):
        settle_job(session, job_id=session.get_one(JobItem, item_id).job_id)


def settle_job(session: Session, *, job_id: str) -> str | None:
    """Give the job its final state once its source is listed and every item has one; returns
    it (None while running). Locks the job row, so concurrent settlers see each other."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.state in FINAL_JOB_STATES or not job.listed:
        return job.state if job is not None and job.state in FINAL_JOB_STATES else None
    counts = item_counts(session, job_id=job_id)
    if any(counts.get(state, 0) for state in ItemState if state not in FINAL_ITEM_STATES):
        return None
    succeeded, failed = counts.get(ItemState.SUCCEEDED, 0), counts.get(ItemState.FAILED, 0)
    if failed == 0 and succeeded > 0 and job.error is None:
        final = JobState.SUCCEEDED
    elif succeeded == 0:
        final = JobState.FAILED
    else:
        final = JobState.PARTIALLY_FAILED
    job.state, job.finished_at = final, utcnow()
    session.flush()
    return final


def item_counts(session: Session, *, job_id: str) -> dict[str, int]:
    rows = session.execute(
        select(JobItem.state, func.count()).where(JobItem.job_id == job_id).group_by(JobItem.state)
    )
    return {state: count for state, count in rows}


def job_counts(session: Session, *, job: Job) -> JobCounts:
    """Items by state and clips by outcome (pending = sampled but not yet labelled)."""
    items = item_counts(session, job_id=job.id)
    clips = job_clips(job.id)
    total = session.scalar(select(func.count()).select_from(clips.subquery())) or 0
    outcomes = dict(
        session.execute(
            select(Prediction.status, func.count())
            .where(
                Prediction.clip_id.in_(clips),
                Prediction.model_version_id == job.model_version_id,
            )
            .group_by(Prediction.status)
        ).all()
    )
    counted = {
        "total": total,
        "labelled": outcomes.get(PredictionStatus.OK, 0),
        "failed": outcomes.get(PredictionStatus.FAILED, 0),
    }
    counted["pending"] = total - counted["labelled"] - counted["failed"]
    return JobCounts(items={state: items.get(state, 0) for state in ItemState}, clips=counted)


def job_clips(job_id: str) -> Select:
    """The ids of a job's clips: each item's video's clips of the item's sampling."""
    return select(Clip.id).join(
        JobItem,
        and_(
            JobItem.job_id == job_id,
            JobItem.video_id == Clip.video_id,
            JobItem.sampling == Clip.sampling,
        ),
    )
