"""Runtime settings, read once from `PACKSIGHT_*` environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "token"}


class Settings(BaseSettings):
    """Everything a process of packsight can be configured with.

    With nothing set, packsight runs on the embedded default: a SQLite file and a local
    object folder under `data_dir`, tasks executed in-process.
    """

    model_config = SettingsConfigDict(env_prefix="PACKSIGHT_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".packsight")
    database_url: str | None = None
    broker_url: str | None = None
    # How long Redis waits before handing an unacknowledged task to another worker. Every
    # process on one Redis must use the same value (checked when a worker starts). A message
    # redelivered while its task still runs is harmless (the task's lease is alive, so the copy
    # is dropped), and a lost task comes back through the sweeper long before this.
    visibility_timeout_s: int = Field(default=6 * 3600, ge=60)
    # Deliveries of one unit of work that may die (worker killed, out of memory) or raise an
    # unexpected error before its video or clips are failed.
    max_attempts: int = Field(default=3, ge=1)
    # The sweeper (run by `packsight beat`) looks this often for work the broker lost or whose
    # worker died...
    sweep_interval_s: float = Field(default=60.0, gt=0)
    # ...and republishes a unit whose worker sent no heartbeat for this long (workers send one
    # every quarter of it) or whose message is no longer in the broker after this long.
    stale_after_s: float = Field(default=300.0, ge=1)
    # Units of each kind published ahead of the workers; the rest wait in the database, so the
    # broker holds a bounded number of messages however large the job.
    dispatch_window: int = Field(default=256, ge=1)
    # Database, broker and S3 outages are waited out for this long (retries with capped
    # exponential backoff and jitter) before a delivery gives up and leaves its work to the
    # sweeper; they never fail a video or a clip.
    transient_retry_s: float = Field(default=900.0, ge=0)
    retry_backoff_max_s: float = Field(default=60.0, gt=0)

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
    max_new_tokens: int = 96
    # Clips per forward pass on the GPU, and model batches per GPU task: a task of several
    # batches lets the worker load the next batch's frames while the GPU runs the current one.
    gpu_batch_size: int = Field(default=64, ge=1)
    gpu_task_batches: int = Field(default=4, ge=1)

    frames_per_clip: int = Field(default=8, ge=2)
    clip_seconds: float = Field(default=5.0, gt=0)
    frame_max_side: int = Field(default=336, ge=28)
    motion_width: int = 160
    motion_height: int = 120
    taxonomy: str = "assignment"

    api_token: SecretStr | None = None

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
    test_clips: int = Field(default=30, ge=1)
    # A candidate serves only if it beats the champion on this metric without losing more than
    # the tolerance on the others.
    promotion_metric: Literal["OCA", "tIoU@0.5", "AA@1"] = "AA@1"
    promotion_tolerance: float = Field(default=0.02, ge=0)
    # A queued/running run without a heartbeat for this long is taken as dead and no longer
    # blocks a new run (when no training worker picks it up at all). Longer than
    # stale_after_s, so a run whose worker was lost is first redelivered by the sweeper (and
    # resumes from its checkpoint) before anything gives up on it.
    training_stale_after_s: int = Field(default=7 * 3600, ge=60)

    @field_validator("frames_per_clip")
    @classmethod
    def _even_frames(cls, value: int) -> int:
        # Qwen2-VL merges frames in temporal pairs; an odd count wastes a padded frame.
        if value % 2:
            raise ValueError("frames_per_clip must be even (Qwen2-VL groups frames in pairs)")
        return value

    @field_validator("adapter", "training_bucket")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        # compose passes unset variables as "": that means "none", not a path named "".
        return value or None

    @field_validator("training_schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        if not value.strip():
            return ""
        from celery.schedules import crontab

        try:
            crontab(**crontab_fields(value))
        except ValueError as exc:
            raise ValueError(
                f"training_schedule {value!r} is not a 5-field crontab "
                f"('minute hour day-of-month month day-of-week'), or empty to disable: {exc}"
            ) from exc
        return " ".join(value.split())

    @field_validator("api_token")
    @classmethod
    def _no_placeholder_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("PACKSIGHT_API_TOKEN is a placeholder; set a real secret")
        return value

    @model_validator(mode="after")
    def _stale_after_redelivery(self) -> Settings:
        if self.training_stale_after_s <= self.stale_after_s:
            raise ValueError(
                f"training_stale_after_s ({self.training_stale_after_s}) must exceed "
                f"stale_after_s ({self.stale_after_s}): a lost run is redelivered and resumed "
                "before it may be given up"
            )
        return self

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


CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def crontab_fields(expression: str) -> dict[str, str]:
    """A 5-field crontab line as keyword arguments of celery.schedules.crontab (whose positional
    order differs from cron's)."""
    fields = expression.split()
    if len(fields) != len(CRONTAB_FIELDS):
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    return dict(zip(CRONTAB_FIELDS, fields, strict=True))


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache after changing the env)."""
    return Settings()
