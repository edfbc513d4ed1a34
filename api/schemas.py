"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from packsight.api.validation import (
    MAX_JOB_KEYS,
    Bucket,
    FrameNumber,
    ObjectKey,
    PlainText,
    Prefix,
)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: Bucket
    prefix: Prefix | None = None
    keys: list[ObjectKey] | None = Field(default=None, max_length=MAX_JOB_KEYS)

    @model_validator(mode="after")
    def _one_source(self) -> JobCreate:
        if (self.prefix is None) == (self.keys is None):
            raise ValueError("give exactly one of 'prefix' or 'keys'")
        if self.prefix is not None and not self.prefix.strip():
            # An empty prefix would label the whole bucket; make that a deliberate choice.
            raise ValueError("'prefix' must not be empty; name a folder or list 'keys'")
        if self.keys is not None and not self.keys:
            raise ValueError("'keys' must not be empty")
        return self


class JobAccepted(BaseModel):
    job_id: str
    state: str
    # Videos recorded so far; with listed false, the rest of a large source is still being
    # listed in the background (follow GET /v1/jobs/{id}).
    items: int
    listed: bool


class ClipCounts(BaseModel):
    total: int
    labelled: int
    failed: int
    pending: int


class FailedItem(BaseModel):
    key: str
    error: str | None


class JobStatus(BaseModel):
    id: str
    state: str
    bucket: str
    prefix: str | None
    model_version: str
    taxonomy: str
    created_at: datetime
    finished_at: datetime | None
    listed: bool  # false while a large source is still being listed into items
    error: str | None  # why the job as a whole could not go on, if it could not
    items: dict[str, int]
    clips: ClipCounts
    failed_items: list[FailedItem]


class TemporalSegment(BaseModel):
    start_frame: int
    end_frame: int


class ClipResult(BaseModel):
    """The seed's five fields, then where the clip is: its video and its frames (inclusive, as in
    temporal_segment) and seconds in that video; then its outcome."""

    clip_id: str
    dominant_operation: str | None
    temporal_segment: TemporalSegment | None
    anticipated_next_operation: str | None
    confidence: float | None
    bucket: str
    video_key: str
    video_id: int  # GET /v1/videos/{video_id}/timeline
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    status: str
    error: str | None


class ResultsPage(BaseModel):
    taxonomy: str  # of the operations named
    items: list[ClipResult]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class LabelCreate(BaseModel):
    """A human correction: `operation` holds over [start_frame, end_frame) of the video."""

    model_config = ConfigDict(extra="forbid")

    bucket: Bucket
    video_key: ObjectKey
    operation: PlainText = Field(min_length=1, max_length=128)
    start_frame: FrameNumber
    end_frame: FrameNumber  # exclusive
    # A built-in taxonomy name; a path would let a client make the server read its files.
    taxonomy: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$")

    @model_validator(mode="after")
    def _ordered(self) -> LabelCreate:
        if self.start_frame >= self.end_frame:
            raise ValueError("start_frame must be less than end_frame (end_frame is exclusive)")
        return self


class LabelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    bucket: str
    video_key: str
    taxonomy: str
    operation: str
    start_frame: int
    end_frame: int
    source: str
    verified: bool
    subject: str | None
    session: str | None
    created_at: datetime


class VideoLabels(BaseModel):
    bucket: str
    video_key: str
    labels: list[LabelOut]


class ConfusionOut(BaseModel):
    """A model version's confusion matrix on one split: matrix[i][j] clips of true operation
    operations[i] were predicted as predicted[j] ("(none)": no usable answer)."""

    model_version: str
    split: str
    taxonomy: str
    operations: list[str]
    predicted: list[str]
    matrix: list[list[int]]
    metrics: dict[str, object]


class TrainingRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # TrainingConfig fields to override for this run (lr, max_steps, lora_r, ...).
    config: dict[str, object] = Field(default_factory=dict)
    # Train on this bucket's verified labels only (default: PACKSIGHT_TRAINING_BUCKET, else all).
    bucket: Bucket | None = None


class TrainingRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    state: str
    trigger: str
    base_model: str
    quantization: str
    taxonomy: str
    params: dict[str, object]
    step: int
    total_steps: int | None
    # The phase and its details: videos read, the latest loss, the model being evaluated.
    progress: dict[str, object] | None
    dataset: dict[str, object] | None
    candidate_version_id: int | None
    champion_version_id: int | None
    decision: str | None
    decision_reason: str | None
    results: dict[str, object] | None
    artifacts_uri: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class TimelineSegmentOut(BaseModel):
    operation: str
    start_frame: int  # in the video
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    confidence: float  # the mean of its clips' probability for the operation
    clips: int


class TimelineOut(BaseModel):
    video_id: int
    bucket: str
    key: str
    fps: float
    frame_count: int
    model_version: str
    # Whether the version has a transition prior (a trained adapter); without one the timeline
    # is its raw answers.
    prior: bool
    segments: list[TimelineSegmentOut]
    raw_segments: list[TimelineSegmentOut]
    labels: list[dict[str, object]]  # the labelled truth, when the video has labels
    clips: list[dict[str, object]]  # per clip: its window, the raw and the smoothed answer


class ModelVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: int
    name: str
    base_model: str
    adapter_uri: str | None
    quantization: str
    taxonomy: str
    is_serving: bool
    # What its adapter was trained with (frame settings, answer format); jobs label with them.
    settings: dict[str, object] | None
    # Per split: the metrics, and the trivial baselines' on the same clips ("baselines").
    metrics: dict[str, object] | None
    created_at: datetime


class ReviewClipOut(BaseModel):
    clip_id: str
    bucket: str
    video_key: str
    video_id: int  # GET /v1/videos/{id}/timeline
    start_frame: int  # in the video, inclusive
    end_frame: int
    start_s: float
    end_s: float
    model_version: str
    dominant_operation: str
    confidence: float
    smoothed_operation: str | None  # the prior's answer, when the version has a prior
    score: float  # higher: more worth a check
    margin: float | None  # between the two most likely operations
    reasons: list[str]


class ReviewOut(BaseModel):
    bucket: str
    considered: int  # labelled clips looked at
    reviewed: int  # of those, already labelled by people (left out)
    clips: list[ReviewClipOut]  # most worth a check first
