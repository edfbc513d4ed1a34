"""Labelling jobs: submit, follow, read results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, status
from sqlalchemy import func, select

from packsight.api.deps import Authorized, SessionDep, SettingsDep
from packsight.api.schemas import (
    ClipCounts,
    ClipResult,
    FailedItem,
    JobAccepted,
    JobCreate,
    JobStatus,
    ResultsPage,
    TemporalSegment,
)
from packsight.api.validation import INT32_MAX, ResourceId, canonical_uuid
from packsight.models.jobs import job_counts
from packsight.models.predictions import job_results_query
from packsight.models.tables import ItemState, Job, JobItem, ModelVersion
from packsight.storage import BucketNotFoundError, InvalidKeyError, shown
from packsight.workers.submit import NothingToLabelError, create_labelling_job, enqueue_items

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Authorized])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def submit_job(body: JobCreate, settings: SettingsDep, background: BackgroundTasks) -> JobAccepted:
    if body.bucket == settings.artifact_bucket:
        # packsight's own frame packs, adapters and checkpoints: not videos to label.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"bucket {body.bucket!r} is packsight's internal artifact bucket "
            "(PACKSIGHT_ARTIFACT_BUCKET), not a video source",
        )
    try:
        submission = create_labelling_job(
            settings, bucket=body.bucket, prefix=body.prefix, keys=body.keys
        )
    except BucketNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except (NothingToLabelError, InvalidKeyError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    if settings.embedded:
        # No broker: run the pipeline in this process after the response is sent.
        background.add_task(enqueue_items, submission.item_ids)
    else:
        enqueue_items(submission.item_ids)
    return JobAccepted(job_id=submission.job_id, state="queued", items=len(submission.item_ids))


def _job_or_404(session: SessionDep, job_id: str) -> Job:
    stored_id = canonical_uuid(job_id)
    job = session.get(Job, stored_id) if stored_id else None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {shown(job_id)} not found")
    return job


@router.get("/{job_id}")
def get_job(job_id: ResourceId, session: SessionDep) -> JobStatus:
    job = _job_or_404(session, job_id)
    counts = job_counts(session, job=job)
    failed = session.scalars(
        select(JobItem)
        .where(JobItem.job_id == job.id, JobItem.state == ItemState.FAILED)
        .order_by(JobItem.id)
        .limit(100)
    )
    return JobStatus(
        id=job.id,
        state=job.state,
        bucket=job.bucket,
        prefix=job.prefix,
        model_version=session.get(ModelVersion, job.model_version_id).name,
        created_at=job.created_at,
        finished_at=job.finished_at,
        items=counts.items,
        clips=ClipCounts(**counts.clips),
        failed_items=[FailedItem(key=item.key, error=item.error) for item in failed],
    )


@router.get("/{job_id}/results")
def get_results(
    job_id: ResourceId,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultsPage:
    job = _job_or_404(session, job_id)
    query = job_results_query(job_id=job.id, model_version_id=job.model_version_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.offset(offset).limit(limit)).all()
    items = [
        ClipResult(
            clip_id=clip.clip_key,
            video_key=video_key,
            window_start_frame=clip.start_frame,
            window_end_frame=clip.end_frame,
            status=pred.status,
            dominant_operation=pred.dominant_operation,
            temporal_segment=(
                TemporalSegment(start_frame=pred.start_frame, end_frame=pred.end_frame)
                if pred.start_frame is not None
                else None
            ),
            anticipated_next_operation=pred.anticipated_next_operation,
            confidence=pred.confidence,
            error=pred.error,
        )
        for pred, clip, video_key in rows
    ]
    next_offset = offset + len(items) if offset + len(items) < total else None
    return ResultsPage(
        items=items, total=total, offset=offset, limit=limit, next_offset=next_offset
    )
