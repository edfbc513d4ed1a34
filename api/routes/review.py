"""The review queue: the clips most worth a person's check, as JSON or as Label Studio tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse

from packsight.api.deps import Authorized, ContextDep, SessionDep
from packsight.api.schemas import ReviewClipOut, ReviewOut
from packsight.api.validation import PRINTABLE, canonical_uuid
from packsight.models.tables.jobs import Job
from packsight.pipeline.label_studio import label_studio_tasks
from packsight.pipeline.review import review_queue
from packsight.storage.keys import shown

router = APIRouter(prefix="/v1/review", tags=["review"], dependencies=[Authorized])


@router.get(
    "",
    response_model=ReviewOut,
    responses={200: {"description": "ReviewOut, or with format=label-studio a list of tasks"}},
)
def get_review(
    session: SessionDep,
    ctx: ContextDep,
    bucket: Annotated[
        str | None,
        Query(min_length=1, max_length=255, json_schema_extra=PRINTABLE, description="or job_id"),
    ] = None,
    job_id: Annotated[
        str | None, Query(max_length=64, description="only this job's videos, its model version")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    fmt: Annotated[Literal["json", "label-studio"], Query(alias="format")] = "json",
) -> ReviewOut | JSONResponse:
    """Labelled clips ranked by how much a check is worth: low confidence, a small margin
    between the two likeliest operations, the prior or another model version disagreeing.
    Clips people have labelled are left out."""
    job = None
    if job_id is not None:
        stored_id = canonical_uuid(job_id)
        job = session.get(Job, stored_id) if stored_id else None
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {shown(job_id)} not found")
        if bucket is not None and bucket != job.bucket:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"job {job.id} labelled bucket {job.bucket!r}, not {bucket!r}",
            )
        bucket = job.bucket
    if bucket is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give bucket or job_id")
    queue = review_queue(session, bucket=bucket, job=job, limit=limit)
    if fmt == "label-studio":  # a list of tasks, not the ReviewOut the route declares
        return JSONResponse(label_studio_tasks(ctx, queue.clips))
    return ReviewOut(
        bucket=queue.bucket,
        considered=queue.considered,
        reviewed=queue.reviewed,
        clips=[ReviewClipOut.model_validate(c.to_json()) for c in queue.clips],
    )
