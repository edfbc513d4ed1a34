"""Ground-truth labels: annotated operation intervals of a video."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from packsight.models.tables.base import Base, BigId, utcnow


class Label(Base):
    """Ground truth: an annotated operation interval of a video (annotation import or a human)."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_video", "bucket", "video_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(255))
    video_key: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str | None] = mapped_column(String(64))
    session: Mapped[str | None] = mapped_column(String(64))
    taxonomy: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(128))
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)  # exclusive
    source: Mapped[str] = mapped_column(String(32))  # "annotation" | "human"
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
