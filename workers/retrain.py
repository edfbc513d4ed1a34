"""Start training runs (API, CLI and the nightly beat task share this): parameters are frozen
into the run when it is queued, and at most one run is active (models/training_runs.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from pydantic import TypeAdapter, ValidationError

from packsight.models.db import session_scope
from packsight.models.tables import TrainingRunState
from packsight.models.training_runs import finish_run, start_run
from packsight.retraining import RunParams, Splits
from packsight.settings import Settings
from packsight.vlm.training_config import TrainingConfig


def training_params(
    settings: Settings, *, config: dict[str, Any] | None = None, bucket: str | None = None
) -> RunParams:
    """The run's parameters from the settings, with `config` overriding TrainingConfig fields.
    Raises ValueError naming unknown or invalid fields."""
    overrides = {**settings.training_config, **(config or {})}
    known = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if overrides.get("quantization", settings.quantization) != settings.quantization:
        # The run, its candidate and the base it is compared with share one quantization.
        raise ValueError(
            "quantization comes from PACKSIGHT_QUANTIZATION "
            f"({settings.quantization!r}); it cannot differ for one run"
        )
    overrides["quantization"] = settings.quantization
    try:
        # Checks types too ("lr": "fast" is refused now, not hours later in the optimizer).
        training = TypeAdapter(TrainingConfig).validate_python(overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid training settings: {problems}") from exc
    return RunParams(
        config=json.loads(json.dumps(asdict(training))),
        splits=Splits(
            train=tuple(settings.train_subjects),
            validation=tuple(settings.validation_subjects),
            test=tuple(settings.test_subjects),
            test_clips=settings.test_clips,
        ),
        bucket=bucket or settings.training_bucket,
        frames_per_clip=settings.frames_per_clip,
        clip_seconds=settings.clip_seconds,
        max_side=settings.frame_max_side,
        promotion_metric=settings.promotion_metric,
        promotion_tolerance=settings.promotion_tolerance,
    )


def record_run(
    settings: Settings,
    *,
    trigger: str,
    config: dict[str, Any] | None = None,
    bucket: str | None = None,
) -> str:
    """Record a queued run (committed, so its task finds it); ActiveRunError if one is active,
    ValueError for invalid training settings."""
    params = training_params(settings, config=config, bucket=bucket)
    with session_scope(settings.resolved_database_url) as session:
        run = start_run(
            session,
            trigger=trigger,
            base_model=settings.model,
            quantization=settings.quantization,
            taxonomy=settings.taxonomy,
            params=json.loads(json.dumps(params.to_json())),
            stale_after_s=settings.training_stale_after_s,
        )
        return run.id


class QueueUnavailableError(RuntimeError):
    """The run could not be sent to the training queue (broker down); it was marked failed."""


def queue_run(settings: Settings, run_id: str) -> None:
    """Send the run to the training queue (run in this process on the embedded default). If the
    broker refuses, the run is failed at once so it does not hold the one active slot."""
    from packsight.workers.tasks.train import train_adapter_task

    try:
        train_adapter_task.apply_async(args=[run_id])
    except Exception as exc:
        if settings.embedded:
            raise  # the run itself raised; the task records its own failures
        fail_run(settings, run_id, f"could not be queued: {type(exc).__name__}: {exc}")
        raise QueueUnavailableError(
            f"training run {run_id} could not be queued ({exc}); it was marked failed"
        ) from exc


def fail_run(settings: Settings, run_id: str, error: str) -> None:
    with session_scope(settings.resolved_database_url) as session:
        finish_run(session, run_id, state=TrainingRunState.FAILED, error=error)


def start_training(
    settings: Settings,
    *,
    trigger: str,
    config: dict[str, Any] | None = None,
    bucket: str | None = None,
) -> str:
    """Record and queue a run; raises ActiveRunError while another is active. Embedded, the run
    executes here before this returns."""
    run_id = record_run(settings, trigger=trigger, config=config, bucket=bucket)
    queue_run(settings, run_id)
    return run_id
