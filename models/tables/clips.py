"""Videos, the clips sampled from them, and the prediction of each clip under a model version."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from packsight.models.tables.base import Base, BigId, utcnow


class PredictionStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = (UniqueConstraint("bucket", "key", "etag", name="uq_videos_object"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    fps: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    # Who and what the recording is (from the key's layout, else from imported labels), and the
    # prefix of its clip ids ("U0108_S0500").
    subject: Mapped[str | None] = mapped_column(String(64))
    session: Mapped[str | None] = mapped_column(String(64))
    clip_prefix: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClipPrefix(Base):
    """Which video key of a bucket owns a clip-id prefix: two keys whose clips would share ids
    (the same subject and session in two folders) cannot both be labelled in one bucket."""

    __tablename__ = "clip_prefixes"
    bucket: Mapped[str] = mapped_column(String(255), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(1024), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024))


class Clip(Base):
    """A window of a video with the frames sampled from it (positions within the window), under
    one set of frame settings (`sampling`): the same window sampled otherwise is another clip,
    with predictions of its own."""

    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("video_id", "sampling", "start_frame", name="uq_clips_window"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    sampling: Mapped[str] = mapped_column(String(128), server_default="")
    clip_key: Mapped[str] = mapped_column(String(1100), index=True)  # a prefix is <= 1024
    index: Mapped[int] = mapped_column(Integer)
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)  # exclusive, in video frames
    frame_indices: Mapped[list[int]] = mapped_column(JSON)
    frames_uri: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame


class Prediction(Base):
    """The outcome of one clip under one model version: a label, or the error that prevented it."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("clip_id", "model_version_id", name="uq_predictions_clip_model"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    dominant_operation: Mapped[str | None] = mapped_column(String(128))
    start_frame: Mapped[int | None] = mapped_column(Integer)  # within the clip
    end_frame: Mapped[int | None] = mapped_column(Integer)  # within the clip, inclusive
    anticipated_next_operation: Mapped[str | None] = mapped_column(String(128))
    confidence: Mapped[float | None] = mapped_column(Float)
    # The model's probability of every operation (taxonomy order), as dominant and as next.
    operation_probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    next_probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    raw_output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
