"""Ground-truth labels: read a video's intervals, store a human correction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from packsight.api.deps import Authorized, SessionDep, SettingsDep
from packsight.api.schemas import LabelCreate, LabelOut, VideoLabels
from packsight.api.validation import PRINTABLE
from packsight.labels.taxonomy import TaxonomyError
from packsight.models.labels import LabelError, add_correction, video_labels, video_taxonomy

router = APIRouter(prefix="/v1/labels", tags=["labels"], dependencies=[Authorized])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_correction(body: LabelCreate, session: SessionDep, settings: SettingsDep) -> LabelOut:
    # Without an explicit taxonomy the correction speaks the video's existing labels' language,
    # and for an unlabelled video the one the service labels in.
    taxonomy = (
        body.taxonomy
        or video_taxonomy(session, bucket=body.bucket, video_key=body.video_key)
        or settings.taxonomy
    )
    try:
        label = add_correction(
            session,
            bucket=body.bucket,
            video_key=body.video_key,
            operation=body.operation,
            start_frame=body.start_frame,
            end_frame=body.end_frame,
            taxonomy=taxonomy,
        )
    except (LabelError, TaxonomyError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return LabelOut.model_validate(label)


@router.get("")
def get_video_labels(
    session: SessionDep,
    bucket: Annotated[str, Query(min_length=1, max_length=255, json_schema_extra=PRINTABLE)],
    video_key: Annotated[str, Query(min_length=1, max_length=1024, json_schema_extra=PRINTABLE)],
) -> VideoLabels:
    rows = video_labels(session, bucket=bucket, video_key=video_key)
    return VideoLabels(
        bucket=bucket, video_key=video_key, labels=[LabelOut.model_validate(r) for r in rows]
    )
