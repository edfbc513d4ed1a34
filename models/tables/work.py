"""Work units: what is still to be done, for the sweeper and the workers to agree on."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from packsight.models.tables.base import Base, BigId, utcnow


class UnitKind(StrEnum):
    """What a work unit does; each kind has its own Celery task (list and sample share the cpu
    queue)."""

    LIST = "list"  # list a job's source into items, a chunk at a time
    SAMPLE = "sample"  # decode one item's video, sample its clips' frames
    LABEL = "label"  # run the model over a batch of one item's clips
    TRAIN = "train"  # one training run


class UnitState(StrEnum):
    PENDING = "pending"  # to be published
    DISPATCHED = "dispatched"  # published to the broker, not yet taken by a worker
    RUNNING = "running"  # held by a worker under `lease`, kept alive by heartbeats


class WorkUnit(Base):
    """Work that is still to be done. Postgres decides what is left; the broker only delivers:
    a unit is recorded in the same transaction as the change that calls for it, published
    after the commit, and deleted in the transaction that records its outcome. Whatever the
    broker loses, the sweeper finds here and publishes again."""

    __tablename__ = "work_units"
    __table_args__ = (Index("ix_work_units_kind_state", "kind", "state", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int | None] = mapped_column(
        ForeignKey("job_items.id", ondelete="CASCADE"), index=True
    )
    training_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="CASCADE"), index=True
    )
    # What to do, beyond the rows referenced: clip ids of a label unit, the keys a list unit
    # still has to turn into items. Never changed once written.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # How far a resumable unit got (a list unit's last key), committed with each chunk.
    cursor: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=UnitState.PENDING)
    # Not to be published before this moment (backoff after a failed delivery).
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatches: Mapped[int] = mapped_column(Integer, default=0)
    # A random token per delivery that took the unit; only its holder may record the outcome.
    lease: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Deliveries that died (worker lost) or raised an unexpected error; capped by max_attempts.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
