"""Labelling jobs: submit (idempotently), find, follow, read results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Query, Response, status
from sqlalchemy import select

from packsight.api.deps import Authorized, ContextDep, SessionDep, run_here_if_embedded
from packsight.api.schemas import (
    ClipCounts,
    ClipResult,
    FailedItem,
    JobAccepted,
    JobCreate,
    JobStatus,
    ResultsPage,
)
from packsight.api.validation import INT32_MAX, ResourceId, canonical_uuid
from packsight.models.tables.jobs import Job
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.dispatch import BrokerUnavailableError
from packsight.pipeline.results import job_results, job_summary
from packsight.pipeline.submission import (
    FrameSettingsMismatchError,
    IdempotencyConflictError,
    JobRequest,
    NothingToLabelError,
)
from packsight.pipeline.submission import submit_job as submit
from packsight.storage.base import BucketNotFoundError, InvalidKeyError
from packsight.storage.keys import shown

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Authorized])
MAX_FAILED_ITEMS_SHOWN = 100


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Send the same key when retrying a request: the job is created once.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"description": "A retry: the job an earlier request with this key made"}},
)
def submit_job(
    body: JobCreate,
    ctx: ContextDep,
    background: BackgroundTasks,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    request = JobRequest(
        bucket=body.bucket,
        prefix=body.prefix,
        keys=tuple(body.keys) if body.keys is not None else None,
    )
    try:
        submission = submit(ctx, request, idempotency_key=idempotency_key)
    except BucketNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except IdempotencyConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except (NothingToLabelError, InvalidKeyError, FrameSettingsMismatchError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except BrokerUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    if submission.created:
        run_here_if_embedded(background, ctx, job_id=submission.job_id)
    else:
        response.status_code = status.HTTP_200_OK
    return JobAccepted(
        job_id=submission.job_id, state="queued", items=submission.items, listed=submission.listed
    )


@router.get("")
def list_jobs(
    session: SessionDep,
    idempotency_key: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[JobStatus]:
    """Recent jobs, newest first; with idempotency_key, the job a request with that key made
    (a client that lost the response finds its job this way)."""
    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if idempotency_key is not None:
        query = query.where(Job.idempotency_key == idempotency_key)
    return [_status(session, job) for job in session.scalars(query)]


def _job_or_404(session: SessionDep, job_id: str) -> Job:
    stored_id = canonical_uuid(job_id)
    job = session.get(Job, stored_id) if stored_id else None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {shown(job_id)} not found")
    return job


@router.get("/{job_id}")
def get_job(job_id: ResourceId, session: SessionDep) -> JobStatus:
    return _status(session, _job_or_404(session, job_id))


def _status(session: SessionDep, job: Job) -> JobStatus:
    summary = job_summary(session, job, failed_only=True, limit=MAX_FAILED_ITEMS_SHOWN)
    return JobStatus(
        id=summary.id,
        state=summary.state,
        bucket=summary.bucket,
        prefix=summary.prefix,
        model_version=summary.model_version,
        taxonomy=summary.taxonomy,
        created_at=summary.created_at,
        finished_at=summary.finished_at,
        listed=summary.listed,
        error=summary.error,
        items=summary.counts.items,
        clips=ClipCounts(**summary.counts.clips),
        failed_items=[FailedItem(key=item.key, error=item.error) for item in summary.items],
    )


@router.get("/{job_id}/results")
def get_results(
    job_id: ResourceId,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ResultsPage:
    job = _job_or_404(session, job_id)
    records, total = job_results(session, job, offset=offset, limit=limit)
    items = [ClipResult.model_validate(record) for record in records]
    next_offset = offset + len(items) if offset + len(items) < total else None
    return ResultsPage(
        taxonomy=session.get_one(ModelVersion, job.model_version_id).taxonomy,
        items=items,
        total=total,
        offset=offset,
        limit=limit,
        next_offset=next_offset,
    )
