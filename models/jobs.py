"""Job and item lifecycle. Every state change is a guarded UPDATE, so a redelivered task
cannot move an item backwards or count it twice; job counts are derived, never incremented."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from packsight.models.tables import (
    Clip,
    ItemState,
    Job,
    JobItem,
    JobState,
    ModelVersion,
    Prediction,
    PredictionStatus,
    TaskAttempt,
    utcnow,
)


@dataclass
class JobCounts:
    items: dict[str, int] = field(default_factory=dict)
    clips: dict[str, int] = field(default_factory=dict)

    @property
    def items_total(self) -> int:
        return sum(self.items.values())


def get_or_create_model_version(
    session: Session, *, base_model: str, adapter: str | None, quantization: str, taxonomy: str
) -> ModelVersion:
    name = f"{base_model}@{adapter or 'base'}:{quantization}:{taxonomy}"
    version = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if version is None:
        version = ModelVersion(
            name=name,
            base_model=base_model,
            adapter_uri=adapter,
            quantization=quantization,
            taxonomy=taxonomy,
        )
        session.add(version)
        session.flush()
    return version


def create_job(
    session: Session,
    *,
    bucket: str,
    prefix: str | None,
    keys: Iterable[str],
    model_version_id: int,
    params: dict,
) -> Job:
    job = Job(bucket=bucket, prefix=prefix, model_version_id=model_version_id, params=params)
    session.add(job)
    session.flush()
    session.add_all(JobItem(job_id=job.id, key=key) for key in dict.fromkeys(keys))
    session.flush()
    return job


def register_attempt(session: Session, *, task_id: str) -> int:
    """Count one more delivery of a task message; returns the count including this one."""
    row = session.get(TaskAttempt, task_id, with_for_update=True)
    if row is None:
        row = TaskAttempt(task_id=task_id, attempts=0)
        session.add(row)
    row.attempts += 1
    session.flush()
    return row.attempts


def set_item_state(
    session: Session, *, item_id: int, state: str, error: str | None = None, **values: object
) -> bool:
    """Move an item to `state` unless it already ended; False when nothing changed."""
    result = session.execute(
        update(JobItem)
        .where(JobItem.id == item_id, JobItem.state.not_in(ItemState.FINAL))
        .values(state=state, error=error, updated_at=utcnow(), **values)
    )
    if state == ItemState.DECODING:
        session.execute(
            update(Job)
            .where(Job.id == select(JobItem.job_id).where(JobItem.id == item_id).scalar_subquery())
            .where(Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING)
        )
    return result.rowcount > 0


def settle_items(session: Session, *, item_ids: Iterable[int]) -> list[str]:
    """End every inferring item whose clips all have an outcome; returns the touched job ids."""
    jobs: set[str] = set()
    for item in session.scalars(
        select(JobItem).where(JobItem.id.in_(list(item_ids)), JobItem.state == ItemState.INFERRING)
    ):
        job = session.get(Job, item.job_id)
        outcomes = dict(
            session.execute(
                select(Prediction.status, func.count())
                .join(Clip, Clip.id == Prediction.clip_id)
                .where(
                    Clip.video_id == item.video_id,
                    Prediction.model_version_id == job.model_version_id,
                )
                .group_by(Prediction.status)
            ).all()
        )
        done = sum(outcomes.values())
        if item.clip_count is None or done < item.clip_count:
            continue
        failed = outcomes.get(PredictionStatus.FAILED, 0)
        if failed:
            error = f"{failed} of {item.clip_count} clips could not be labelled (see results)"
            set_item_state(session, item_id=item.id, state=ItemState.FAILED, error=error)
        else:
            set_item_state(session, item_id=item.id, state=ItemState.SUCCEEDED)
        jobs.add(item.job_id)
    return sorted(jobs)


def settle_job(session: Session, *, job_id: str) -> str | None:
    """Give the job its final state once every item has one; returns it (None while running)."""
    counts = item_counts(session, job_id=job_id)
    if any(counts.get(state, 0) for state in ItemState.ALL if state not in ItemState.FINAL):
        return None
    succeeded, failed = counts.get(ItemState.SUCCEEDED, 0), counts.get(ItemState.FAILED, 0)
    if failed == 0:
        final = JobState.SUCCEEDED
    elif succeeded == 0:
        final = JobState.FAILED
    else:
        final = JobState.PARTIALLY_FAILED
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.not_in(JobState.FINAL))
        .values(state=final, finished_at=utcnow())
    )
    return final


def item_counts(session: Session, *, job_id: str) -> dict[str, int]:
    rows = session.execute(
        select(JobItem.state, func.count()).where(JobItem.job_id == job_id).group_by(JobItem.state)
    )
    return {state: count for state, count in rows}


def job_counts(session: Session, *, job: Job) -> JobCounts:
    """Items by state and clips by outcome (pending = sampled but not yet labelled)."""
    items = item_counts(session, job_id=job.id)
    videos = select(JobItem.video_id).where(JobItem.job_id == job.id, JobItem.video_id.is_not(None))
    total = session.scalar(select(func.count(Clip.id)).where(Clip.video_id.in_(videos))) or 0
    outcomes = dict(
        session.execute(
            select(Prediction.status, func.count())
            .join(Clip, Clip.id == Prediction.clip_id)
            .where(Clip.video_id.in_(videos), Prediction.model_version_id == job.model_version_id)
            .group_by(Prediction.status)
        ).all()
    )
    clips = {
        "total": total,
        "labelled": outcomes.get(PredictionStatus.OK, 0),
        "failed": outcomes.get(PredictionStatus.FAILED, 0),
    }
    clips["pending"] = total - clips["labelled"] - clips["failed"]
    return JobCounts(items={state: items.get(state, 0) for state in ItemState.ALL}, clips=clips)
