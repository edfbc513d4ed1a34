"""A job's summary and its per-clip results, one shape for the API and the CLI. A clip record
holds the seed's five fields first, then where the clip is (bucket, video key, its frames and
seconds in the video), then its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from packsight.models.jobs import JobCounts, item_outcomes, job_counts
from packsight.models.predictions import job_results_query
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus, Video
from packsight.models.tables.jobs import FINAL_JOB_STATES, ItemState, Job, JobItem, JobState
from packsight.models.tables.versions import ModelVersion


def clip_record(prediction: Prediction, clip: Clip, video: Video) -> dict[str, Any]:
    """Frames are inclusive, like temporal_segment's (which counts from the clip's start);
    seconds run from the video's start to the end of the clip's last frame."""
    labelled = prediction.status == PredictionStatus.OK
    confidence = None
    if labelled:
        assert prediction.confidence is not None, "a label always has a confidence"
        confidence = round(prediction.confidence, 4)
    return {
        "clip_id": clip.clip_key,
        "dominant_operation": prediction.dominant_operation,
        "temporal_segment": (
            {"start_frame": prediction.start_frame, "end_frame": prediction.end_frame}
            if labelled
            else None
        ),
        "anticipated_next_operation": prediction.anticipated_next_operation,
        "confidence": confidence,
        "bucket": video.bucket,
        "video_key": video.key,
        "video_id": video.id,  # GET /v1/videos/{id}/timeline
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame - 1,
        "start_s": round(clip.start_frame / video.fps, 3),
        "end_s": round(clip.end_frame / video.fps, 3),
        "status": prediction.status,
        "error": prediction.error,
    }


def job_results(
    session: Session, job: Job, *, offset: int = 0, limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """A page of the job's clip records, in clip-id order, and how many there are in all."""
    query = job_results_query(job_id=job.id, model_version_id=job.model_version_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.offset(offset).limit(limit) if limit is not None else query.offset(offset)
    rows = session.execute(page).all()
    return [clip_record(prediction, clip, video) for prediction, clip, video in rows], total


@dataclass(frozen=True)
class ItemSummary:
    key: str
    state: str
    clips: int | None  # None until the video is sampled
    labelled: int
    error: str | None


@dataclass(frozen=True)
class JobSummary:
    """Where a job stands, as the API and the CLI both show it."""

    id: str
    state: str
    bucket: str
    prefix: str | None  # None when the job names its keys
    model_version: str
    taxonomy: str
    created_at: datetime
    finished_at: datetime | None
    listed: bool
    error: str | None
    counts: JobCounts
    items: list[ItemSummary]

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @property
    def failed(self) -> bool:
        """Whether any video could not be labelled (a command exits 1)."""
        return self.state in (JobState.FAILED, JobState.PARTIALLY_FAILED)


def find_job(session: Session, job_id: str | None = None) -> Job | None:
    """The job of that id, or the latest job when no id is given."""
    if job_id is not None:
        return session.get(Job, job_id)
    return session.scalars(select(Job).order_by(Job.created_at.desc()).limit(1)).first()


def job_summary(
    session: Session, job: Job, *, failed_only: bool = False, limit: int | None = None
) -> JobSummary:
    """The job's state, counts and items (all of them, or the failed ones), by item id."""
    query = select(JobItem).where(JobItem.job_id == job.id).order_by(JobItem.id).limit(limit)
    if failed_only:
        query = query.where(JobItem.state == ItemState.FAILED)
    items = []
    for item in session.scalars(query):
        version_id = job.model_version_id
        outcomes = (
            {} if failed_only else item_outcomes(session, item=item, model_version_id=version_id)
        )
        items.append(
            ItemSummary(
                key=item.key,
                state=item.state,
                clips=item.clip_count,
                labelled=outcomes.get(PredictionStatus.OK, 0),
                error=item.error,
            )
        )
    version = session.get_one(ModelVersion, job.model_version_id)
    return JobSummary(
        id=job.id,
        state=job.state,
        bucket=job.bucket,
        prefix=job.prefix,
        model_version=version.name,
        taxonomy=version.taxonomy,
        created_at=job.created_at,
        finished_at=job.finished_at,
        listed=job.listed,
        error=job.error,
        counts=job_counts(session, job=job),
        items=items,
    )
