"""The schema. Postgres in production, SQLite for the embedded default; every change is an
Alembic revision under migrations/versions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    # Named constraints let later migrations drop/alter them, SQLite batch mode included.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


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


class PredictionStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


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
    raw_output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
