"""Videos, clips and predictions: idempotent writes and the results query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session

from packsight.models.db import upsert_insert
from packsight.models.tables.clips import Clip, ClipPrefix, Prediction, PredictionStatus, Video
from packsight.models.tables.jobs import JobItem


@dataclass(frozen=True)
class ClipOutcome:
    """What the GPU stage produced for one clip: a label (error is None) or an error."""

    clip_id: int
    dominant_operation: str | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    anticipated_next_operation: str | None = None
    confidence: float | None = None
    raw_output: str | None = None
    error: str | None = None
    operation_probabilities: Sequence[float] | None = None
    next_probabilities: Sequence[float] | None = None


def upsert_video(session: Session, values: dict[str, object]) -> Video:
    """The row for (bucket, key, etag), created or refreshed with `values` (column: value)."""
    stmt = upsert_insert(session)(Video).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["bucket", "key", "etag"],
        set_={
            k: stmt.excluded[k]
            for k in values
            if k not in ("bucket", "key", "etag", "size") and k in Video.__table__.columns
        },
    )
    session.execute(stmt)
    return session.scalars(
        select(Video).where(
            Video.bucket == values["bucket"],
            Video.key == values["key"],
            Video.etag == values["etag"],
        )
    ).one()


def upsert_clips(
    session: Session, *, video_id: int, sampling: str, clips: Sequence[dict]
) -> list[Clip]:
    """Create or refresh the clips of a video under one sampling (unique by window start), in
    window order."""
    if clips:
        values = [{"video_id": video_id, "sampling": sampling, **c} for c in clips]
        stmt = upsert_insert(session)(Clip).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["video_id", "sampling", "start_frame"],
            set_={
                k: stmt.excluded[k]
                for k in ("clip_key", "index", "end_frame", "frame_indices", "frames_uri")
            },
        )
        session.execute(stmt)
    starts = [c["start_frame"] for c in clips]
    rows = session.scalars(
        select(Clip).where(
            Clip.video_id == video_id, Clip.sampling == sampling, Clip.start_frame.in_(starts)
        )
    ).all()
    return sorted(rows, key=lambda clip: clip.start_frame)


def upsert_predictions(
    session: Session, *, model_version_id: int, outcomes: Sequence[ClipOutcome]
) -> None:
    """One row per (clip, model version). A retry may replace an error with a label, never
    the other way round, so a duplicate delivery cannot erase a good result."""
    if not outcomes:
        return
    rows = [
        {
            "clip_id": o.clip_id,
            "model_version_id": model_version_id,
            "status": PredictionStatus.FAILED if o.error else PredictionStatus.OK,
            "dominant_operation": o.dominant_operation,
            "start_frame": o.start_frame,
            "end_frame": o.end_frame,
            "anticipated_next_operation": o.anticipated_next_operation,
            "confidence": o.confidence,
            "operation_probabilities": _rounded(o.operation_probabilities),
            "next_probabilities": _rounded(o.next_probabilities),
            "raw_output": o.raw_output,
            "error": o.error,
        }
        for o in outcomes
    ]
    stmt = upsert_insert(session)(Prediction).values(rows)
    updated = {k: stmt.excluded[k] for k in rows[0] if k not in ("clip_id", "model_version_id")}
    stmt = stmt.on_conflict_do_update(
        index_elements=["clip_id", "model_version_id"],
        set_=updated,
        where=or_(
            Prediction.status != PredictionStatus.OK,
            stmt.excluded.status == PredictionStatus.OK,
        ),
    )
    session.execute(stmt)


def _rounded(probabilities: Sequence[float] | None) -> list[float] | None:
    # Five decimals are plenty for a timeline, and keep a row of probabilities small.
    return None if probabilities is None else [round(p, 5) for p in probabilities]


def job_results_query(*, job_id: str, model_version_id: int) -> Select:
    """(Prediction, Clip, Video) rows of a job, in a stable order for pagination."""
    return (
        select(Prediction, Clip, Video)
        .join(Clip, Clip.id == Prediction.clip_id)
        .join(Video, Video.id == Clip.video_id)
        .join(
            JobItem,
            and_(
                JobItem.video_id == Video.id,
                JobItem.job_id == job_id,
                JobItem.sampling == Clip.sampling,
            ),
        )
        .where(Prediction.model_version_id == model_version_id)
        .order_by(Clip.clip_key, Clip.start_frame, Clip.id)
    )


class ClipIdCollisionError(ValueError):
    """Another video of the bucket already gives its clips these ids."""

    def __init__(self, message: str, *, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


def claim_clip_prefix(session: Session, *, bucket: str, prefix: str, key: str) -> None:
    """Record that `key` owns the clip-id prefix in `bucket`; ClipIdCollisionError if another
    key does (the unique key settles a race: the second claimant sees the first one's row)."""
    stmt = upsert_insert(session)(ClipPrefix).values(bucket=bucket, prefix=prefix, key=key)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["bucket", "prefix"]))
    owner = session.scalar(
        select(ClipPrefix.key).where(ClipPrefix.bucket == bucket, ClipPrefix.prefix == prefix)
    )
    assert owner is not None, f"no owner of clip prefix {prefix!r} right after claiming it"
    if owner != key:
        raise ClipIdCollisionError(
            f"clip ids of {key!r} would be {prefix}_t…, already those of {owner!r} in bucket "
            f"{bucket!r} (the same subject and session in two places?); remove or rename one",
            owner=owner,
        )


def release_clip_prefix(session: Session, *, bucket: str, prefix: str, key: str) -> None:
    """Forget that `key` owns the prefix (its object is gone: a moved or deleted video)."""
    session.execute(
        delete(ClipPrefix).where(
            ClipPrefix.bucket == bucket, ClipPrefix.prefix == prefix, ClipPrefix.key == key
        )
    )
