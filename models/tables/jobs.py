"""Labelling jobs and their items: one video key of a job each, and the states both go through."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from packsight.models.tables.base import Base, BigId, utcnow


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIALLY_FAILED = "partially_failed"


FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.PARTIALLY_FAILED})


class ItemState(StrEnum):
    QUEUED = "queued"
    DECODING = "decoding"
    INFERRING = "inferring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL_ITEM_STATES = frozenset({ItemState.SUCCEEDED, ItemState.FAILED})


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    state: Mapped[str] = mapped_column(String(32), default=JobState.QUEUED, index=True)
    bucket: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str | None] = mapped_column(String(1024))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    # The sampling parameters the job ran with, so results can be reproduced.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A client's retry of the same request returns this job instead of creating another; the
    # digest of the request tells a retry from a different request under a reused key.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # False while the source is still being listed into items (large jobs are listed in
    # chunks after the request returned); a job cannot end before its listing has.
    listed: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Why the job as a whole could not go on (e.g. the bucket vanished while it was listed).
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobItem(Base):
    """One video key of a job; ends in exactly one of FINAL_ITEM_STATES."""

    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "key", name="uq_job_items_job_key"),
        Index("ix_job_items_job_state", "job_id", "state"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(32), default=ItemState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    video_id: Mapped[int | None] = mapped_column(ForeignKey("videos.id"))
    # The frame settings its clips were sampled under: the item's clips are the video's clips
    # of this sampling (the same video may have clips of other samplings, from other jobs).
    sampling: Mapped[str | None] = mapped_column(String(128))
    clip_count: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
