"""A job's per-clip results, one record shape for the API and the CLI: the seed's five fields
first, then where the clip is (bucket, video key, its frames and seconds in the video), then
its outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from packsight.models.predictions import job_results_query
from packsight.models.tables import Clip, Job, Prediction, PredictionStatus, Video


def clip_record(prediction: Prediction, clip: Clip, video: Video) -> dict[str, Any]:
    """Frames are inclusive, like temporal_segment's (which counts from the clip's start);
    seconds run from the video's start to the end of the clip's last frame."""
    labelled = prediction.status == PredictionStatus.OK
    return {
        "clip_id": clip.clip_key,
        "dominant_operation": prediction.dominant_operation,
        "temporal_segment": (
            {"start_frame": prediction.start_frame, "end_frame": prediction.end_frame}
            if labelled
            else None
        ),
        "anticipated_next_operation": prediction.anticipated_next_operation,
        "confidence": round(prediction.confidence, 4) if labelled else None,
        "bucket": video.bucket,
        "video_key": video.key,
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
