"""A labelled video's timeline: its operations in order with start and end, smoothed with the
serving model's transition prior, as JSON or a PNG."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from packsight.api.deps import Authorized, SessionDep
from packsight.api.schemas import TimelineOut
from packsight.api.validation import INT64_MAX
from packsight.models.tables.clips import Video
from packsight.pipeline.timelines import NoTimelineError, video_timeline

router = APIRouter(prefix="/v1/videos", tags=["videos"], dependencies=[Authorized])
Id = Annotated[int, Path(ge=1, le=INT64_MAX)]


@router.get(
    "/{video_id}/timeline",
    response_model=TimelineOut,
    responses={200: {"content": {"image/png": {}}, "description": "JSON, or PNG with format=png"}},
)
def get_timeline(
    video_id: Id,
    session: SessionDep,
    model_version: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="default: the one that labelled it last")
    ] = None,
    fmt: Annotated[Literal["json", "png"], Query(alias="format")] = "json",
) -> TimelineOut | Response:
    video = session.get(Video, video_id)
    if video is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"video {video_id} not found")
    try:
        found = video_timeline(session, video, model_version_id=model_version)
    except NoTimelineError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if fmt == "png":
        return Response(found.png(), media_type="image/png")
    return TimelineOut.model_validate(found.to_json())
