"""Training runs: one fine-tune each, from the data it gathered to its promotion decision."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from packsight.models.tables.base import Base, utcnow


class TrainingRunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE_RUN_STATES = frozenset({TrainingRunState.QUEUED, TrainingRunState.RUNNING})
FINAL_RUN_STATES = frozenset({TrainingRunState.SUCCEEDED, TrainingRunState.FAILED})


class TrainingRun(Base):
    """One fine-tune: data gathered from verified labels, a QLoRA adapter trained, the candidate
    evaluated against the base and the champion, and the promotion decision."""

    __tablename__ = "training_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    state: Mapped[str] = mapped_column(String(32), default=TrainingRunState.QUEUED, index=True)
    # True while queued or running, NULL once final: the unique constraint admits one active run,
    # whichever process (beat, API, CLI) starts it; NULLs never collide.
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True, default=True)
    trigger: Mapped[str] = mapped_column(String(32))  # "schedule" | "manual"
    base_model: Mapped[str] = mapped_column(String(512))
    quantization: Mapped[str] = mapped_column(String(16))
    taxonomy: Mapped[str] = mapped_column(String(128))
    # Training config, data selection and splits as the run was started with.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A new random token per delivery of the run's task: only the latest delivery may report
    # progress or finish the run, so a superseded copy (redelivered while still running) stops.
    claim: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    dataset: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # clip counts, test clip ids
    # What the run is doing now: {"phase": "gathering" | "training" | "evaluating", ...} with
    # videos read, the latest loss, or the model being scored and its clips done.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    candidate_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    champion_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    decision: Mapped[str | None] = mapped_column(String(16))  # "promoted" | "rejected"
    decision_reason: Mapped[str | None] = mapped_column(Text)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # results.json
    artifacts_uri: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
