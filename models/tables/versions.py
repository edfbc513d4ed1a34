"""Model versions: what predictions are attributed to, how each scored (confusion cells) and
which one served when (promotions and rollbacks)."""

from __future__ import annotations

from datetime import datetime
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


class ModelVersion(Base):
    """A base model + optional adapter + quantization that predictions are attributed to."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one serving version per scope, whatever races between promote and rollback.
        Index(
            "uq_model_versions_serving",
            "base_model",
            "quantization",
            "taxonomy",
            unique=True,
            postgresql_where=text("is_serving"),
            sqlite_where=text("is_serving"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    base_model: Mapped[str] = mapped_column(String(512))
    adapter_uri: Mapped[str | None] = mapped_column(String(1024))
    quantization: Mapped[str] = mapped_column(String(16))
    taxonomy: Mapped[str] = mapped_column(String(128))
    is_serving: Mapped[bool] = mapped_column(Boolean, default=False)
    # What an adapter was trained with (frame settings, answer format); labelling with this
    # version uses the same. None for a base model, which was trained on nothing of ours.
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConfusionCount(Base):
    """One cell of a confusion matrix (true x predicted operation) of a model version."""

    __tablename__ = "confusion_counts"
    __table_args__ = (
        UniqueConstraint(
            "model_version_id",
            "split",
            "true_operation",
            "predicted_operation",
            name="uq_confusion_cell",
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    split: Mapped[str] = mapped_column(String(32))
    true_operation: Mapped[str] = mapped_column(String(128))
    predicted_operation: Mapped[str] = mapped_column(String(128))
    count: Mapped[int] = mapped_column(Integer, default=0)


class ModelPromotion(Base):
    """A change of the serving model version: a promotion after training, or a rollback."""

    __tablename__ = "model_promotions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))  # "promote" | "rollback"
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    training_run_id: Mapped[str | None] = mapped_column(ForeignKey("training_runs.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
