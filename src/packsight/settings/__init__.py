"""Runtime settings, read once from `PACKSIGHT_*` environment variables (or a .env file)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from packsight.secret_rules import check_secret
from packsight.settings import checks
from packsight.video.sampling import SAMPLER, SAMPLERS, FrameSettings


class Settings(BaseSettings):
    """Everything a process of packsight can be configured with. With nothing set: the embedded
    default, a SQLite file and a local object folder under `data_dir`, tasks in-process."""

    # hide_input_in_errors: a refused setting may be a secret (or a URL holding one); errors
    # name the variable, never echo its value into logs.
    model_config = SettingsConfigDict(
        env_prefix="PACKSIGHT_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Local state (SQLite file, objects, adapter cache, training-run folders, beat's schedule):
    # one folder per user, whatever the working directory ($XDG_DATA_HOME or ~/.local/share).
    data_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "packsight"
        )
    )
    # The database password, kept out of DATABASE_URL: any characters (`@:/#%` too) work, as it
    # is quoted into the URL here. Declared before database_url, whose validator inserts it.
    database_password: SecretStr | None = None
    database_url: str | None = None
    broker_url: str | None = None
    # How long Redis waits before handing an unacknowledged task to another worker. Every
    # process on one Redis must use the same value (checked when a worker starts). A message
    # redelivered while its task still runs is harmless (the task's lease is alive, so the copy
    # is dropped), and a lost task comes back through the sweeper long before this.
    visibility_timeout_s: int = Field(default=6 * 3600, ge=60, le=30 * 24 * 3600)
    # Deliveries of one unit of work that may die (worker killed, out of memory) or raise an
    # unexpected error before its video or clips are failed.
    max_attempts: int = Field(default=3, ge=1, le=100)
    # The sweeper (run by `packsight beat`) looks this often for work the broker lost or whose
    # worker died...
    sweep_interval_s: float = Field(default=60.0, gt=0, le=3600)
    # ...and republishes a unit whose worker sent no heartbeat for this long (workers send one
    # every quarter of it) or whose message is no longer in the broker after this long.
    stale_after_s: float = Field(default=300.0, ge=1, le=24 * 3600)
    # Units of each kind published ahead of the workers; the rest wait in the database, so the
    # broker holds a bounded number of messages however large the job.
    dispatch_window: int = Field(default=256, ge=1, le=100_000)
    # Database, broker and S3 outages are waited out for this long (retries with capped
    # exponential backoff and jitter) before a delivery gives up and leaves its work to the
    # sweeper; they never fail a video or a clip.
    transient_retry_s: float = Field(default=900.0, ge=0, le=7 * 24 * 3600)
    # A delivery still running after this long is taken for hung (a decoder stuck on a bad
    # stream, a stalled GPU): its heartbeats stop, and the sweeper hands the unit to another
    # worker, counting an attempt. Training runs get their own, longer, bound.
    max_unit_s: float = Field(default=3 * 3600, ge=60, le=7 * 24 * 3600)
    max_training_s: float = Field(default=48 * 3600, ge=60, le=30 * 24 * 3600)
    retry_backoff_max_s: float = Field(default=60.0, gt=0, le=3600)

    storage: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    artifact_bucket: str = "packsight-artifacts"

    queue_cpu: str = "cpu"
    queue_gpu: str = "gpu.t4"
    queue_train: str = "gpu.t4.train"

    model: str = "Qwen/Qwen2-VL-2B-Instruct"
    adapter: str | None = None
    quantization: Literal["nf4", "none"] = "nf4"
    device: str = "auto"
    max_new_tokens: int = Field(default=96, ge=1, le=4096)
    # Clips per forward pass on the GPU, and model batches per GPU task: a task of several
    # batches lets the worker load the next batch's frames while the GPU runs the current one.
    gpu_batch_size: int = Field(default=64, ge=1, le=4096)
    gpu_task_batches: int = Field(default=4, ge=1, le=256)
    # A GPU delivery keeps taking waiting label units of its model version, a task's worth at a
    # time, for this long, so the GPU runs on from one unit to the next; then it ends, and a job
    # of another version gets the GPU (0: one task's worth only).
    gpu_delivery_s: float = Field(default=60.0, ge=0, le=3600)
    # GPU-only speed-ups of the labeler (vlm/speedups.py): the seven decisions as CUDA graphs
    # (the same answers, on by default); elementwise steps as fused kernels that round as the
    # eager ops do (the same answers, on by default); torch.compile of the vision tower and of
    # the language model's norms (faster still, but near-tie decisions can change: off).
    cuda_graphs: bool = True
    fused_kernels: bool = True
    compile_vision: bool = False
    compile_language: bool = False
    # Exact, but not yet measured on a GPU, hence off: the prefill's remaining device reads
    # made on the host, and the next batch queued before the current one's answers are read.
    host_vision: bool = False
    overlap_batches: bool = False
    # Threads of the video decoder per CPU worker process; 0: the decoder's own choice (one per
    # core, which oversubscribes the cores when every prefork process does it: measured 20-40%
    # slower at full load than one each).
    decode_threads: int = Field(default=1, ge=0, le=64)
    # Where the one decode of labelling runs: "cpu", or "cuda" for the GPU's video decoder
    # (NVDEC, through FFmpeg), its frames copied back for the motion pass and the picks; where
    # no CUDA device can be opened the CPU decodes, with a warning.
    decode_device: Literal["cpu", "cuda"] = "cpu"

    frames_per_clip: int = Field(default=8, ge=2, le=64)
    # At least a second: clip ids name a clip by its start second.
    clip_seconds: float = Field(default=5.0, ge=1, le=3600)
    frame_max_side: int = Field(default=336, ge=28, le=4096)
    motion_width: int = Field(default=160, ge=16, le=4096)
    motion_height: int = Field(default=120, ge=16, le=4096)
    # How frames are picked (video/sampling.py names each); unset, a training run keeps the
    # sampler the serving adapter was trained with, so its candidate stays comparable.
    sampler: str = SAMPLER
    # An adapter is served with the frame settings it was trained with; setting others here
    # explicitly is refused unless this is true (its labels would be worse, silently).
    force_frame_settings: bool = False
    taxonomy: str = "assignment"

    api_token: SecretStr | None = None
    # Largest request body the API reads (bytes); larger ones get 413. 8 MiB holds a job of
    # 100,000 typical keys.
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    # Flower's basic auth, "user:password" (several comma-separated); `packsight flower` reads it.
    flower_basic_auth: SecretStr | None = None
    # Where a worker or beat serves Prometheus metrics (port 0 or empty: off); the API: /metrics.
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"

    # Retraining. The nightly run's crontab ("minute hour day-of-month month day-of-week", in
    # `timezone`); empty disables the schedule (manual runs still work).
    training_schedule: str = "0 2 * * *"
    timezone: str = "UTC"
    # TrainingConfig fields to override, as JSON: PACKSIGHT_TRAINING_CONFIG='{"lr": 2e-4}'.
    training_config: dict[str, Any] = Field(default_factory=dict)
    # Train on the verified labels of this bucket only (default: every bucket).
    training_bucket: str | None = None
    train_subjects: list[str] = ["U0101", "U0102", "U0103", "U0104", "U0105", "U0106"]
    validation_subjects: list[str] = ["U0107"]
    test_subjects: list[str] = ["U0108"]
    test_clips: int = Field(default=30, ge=0, le=1_000_000)  # 0: every test clip
    # A candidate serves only if it beats the champion on this metric without losing more than
    # the tolerance on the others.
    promotion_metric: Literal["OCA", "tIoU@0.5", "AA@1"] = "AA@1"
    promotion_tolerance: float = Field(default=0.02, ge=0, le=1)
    # ...and beats every trivial baseline (the training labels' majority, chance) on OCA and
    # AA@1 by at least this much.
    promotion_baseline_margin: float = Field(default=0.05, ge=0, le=1)
    # A queued/running run without a heartbeat for this long is taken as dead and no longer
    # blocks a new run (no training worker picks it up). Longer than stale_after_s: a run whose
    # worker was lost is first redelivered by the sweeper (resuming from its checkpoint).
    training_stale_after_s: int = Field(default=7 * 3600, ge=60, le=60 * 24 * 3600)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; known: {', '.join(SAMPLERS)}")
        return value

    @field_validator("frames_per_clip")
    @classmethod
    def _even_frames(cls, value: int) -> int:
        # Qwen2-VL merges frames in temporal pairs; an odd count wastes a padded frame.
        if value % 2:
            raise ValueError("frames_per_clip must be even (Qwen2-VL groups frames in pairs)")
        return value

    @field_validator("adapter", "training_bucket", "broker_url", "s3_endpoint_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        # compose passes unset variables as "": that means "none", not a path named "" (an
        # empty broker URL was taken as a broker: tasks queued in memory, never run).
        return value or None

    @field_validator("metrics_port", "database_password", mode="before")
    @classmethod
    def _unset_is_off(cls, value: Any, info: ValidationInfo) -> Any:
        # compose passes an unset variable as "": no metrics server, no separate password
        return value or (0 if info.field_name == "metrics_port" else None)

    @field_validator("training_schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        return checks.training_schedule(value)

    @field_validator("api_token", "s3_secret_key")
    @classmethod
    def _real_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            check_secret(f"PACKSIGHT_{str(info.field_name).upper()}", value.get_secret_value())
        return value

    @field_validator("api_token")
    @classmethod
    def _token_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        checks.header_token(value.get_secret_value() if value is not None else "")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _flower_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            checks.flower_basic_auth(value.get_secret_value())
        return value

    @field_validator("database_url")
    @classmethod
    def _database_password(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        separate: SecretStr | None = info.data.get("database_password")
        return checks.database_url(
            value, separate.get_secret_value() if separate is not None else None
        )

    @model_validator(mode="after")
    def _password_needs_a_url(self) -> Settings:
        if self.database_password is not None and not self.database_url:
            raise ValueError(
                "PACKSIGHT_DATABASE_PASSWORD is set but PACKSIGHT_DATABASE_URL is not: set the "
                "URL without a password (postgresql+psycopg2://user@host:port/database)"
            )
        return self

    @model_validator(mode="after")
    def _stale_after_redelivery(self) -> Settings:
        if self.training_stale_after_s <= self.stale_after_s:
            raise ValueError(
                f"training_stale_after_s ({self.training_stale_after_s}) must exceed "
                f"stale_after_s ({self.stale_after_s}): a lost run is redelivered and resumed "
                "before it may be given up"
            )
        return self

    @model_validator(mode="after")
    def _delivery_within_unit(self) -> Settings:
        if self.gpu_delivery_s * 2 > self.max_unit_s:
            raise ValueError(
                f"gpu_delivery_s ({self.gpu_delivery_s}) must be at most half of max_unit_s "
                f"({self.max_unit_s}): the other half is for loading the model and the last "
                "task, or a GPU delivery would be taken for hung"
            )
        return self

    @property
    def frame_settings(self) -> FrameSettings:
        """The frame settings these settings name (a served adapter may bring its own)."""
        return FrameSettings(
            frames_per_clip=self.frames_per_clip,
            clip_seconds=self.clip_seconds,
            max_side=self.frame_max_side,
            motion_size=(self.motion_width, self.motion_height),
            sampler=self.sampler,
        )

    @property
    def heartbeat_interval_s(self) -> float:
        """How often a worker renews the lease of the unit it holds."""
        return self.stale_after_s / 4

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: tasks run in-process."""
        return self.broker_url is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'packsight.db').resolve()}"

    @property
    def resolved_local_root(self) -> Path:
        return (self.local_root or self.data_dir / "objects").resolve()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache after changing the env)."""
    return Settings()
