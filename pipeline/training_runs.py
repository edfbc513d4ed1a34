"""Starting training runs (API, CLI and the nightly beat task share this): parameters are
frozen into the run when it is queued, at most one run is active (models/training_runs.py), and
the run's work unit is recorded with it, so a run is never lost between commit and publish."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from packsight.models.promotions import serving_version
from packsight.models.tables.training_runs import TrainingRunState
from packsight.models.tables.work import UnitKind
from packsight.models.training_runs import finish_run, start_run
from packsight.models.work import add_units, discard_units
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import top_up
from packsight.settings import Settings
from packsight.training.config import TrainingConfig
from packsight.training.retraining import RunParams, Splits


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
        motion_size=(settings.motion_width, settings.motion_height),
        promotion_metric=settings.promotion_metric,
        promotion_tolerance=settings.promotion_tolerance,
        baseline_margin=settings.promotion_baseline_margin,
        sampler=settings.sampler,
    )


def _competing_sampler(session: Session, settings: Settings, params: RunParams) -> RunParams:
    """Unless PACKSIGHT_SAMPLER is set, the run samples as the serving adapter was trained: a
    candidate on other frames could not be scored against it, and never be promoted."""
    if "sampler" in settings.model_fields_set:
        return params
    serving = serving_version(
        session,
        base_model=settings.model,
        quantization=settings.quantization,
        taxonomy=settings.taxonomy,
    )
    trained = ((serving.settings or {}).get("frames") or {}) if serving is not None else {}
    return replace(params, sampler=trained.get("sampler", params.sampler))


def record_run(
    ctx: Context,
    *,
    trigger: str,
    config: dict[str, Any] | None = None,
    bucket: str | None = None,
) -> str:
    """Record a queued run and its work unit (committed together); ActiveRunError if one is
    active, ValueError for invalid training settings."""
    settings = ctx.settings
    params = training_params(settings, config=config, bucket=bucket)

    def record(session: Session) -> str:
        frozen = _competing_sampler(session, settings, params)
        run = start_run(
            session,
            trigger=trigger,
            base_model=settings.model,
            quantization=settings.quantization,
            taxonomy=settings.taxonomy,
            params=json.loads(json.dumps(frozen.to_json())),
            stale_after_s=settings.training_stale_after_s,
        )
        add_units(session, UnitKind.TRAIN, [{"training_run_id": run.id}])
        return run.id

    try:
        return ctx.transaction(record)
    except IntegrityError:
        # The active run ended between the check and the insert: the slot is free now.
        return ctx.transaction(record)


def fail_run(session: Session, run_id: str, error: str) -> None:
    """End a run as failed, with its work (the caller's transaction)."""
    finish_run(session, run_id, state=TrainingRunState.FAILED, error=error)
    discard_units(session, training_run_id=run_id)


def start_training(
    ctx: Context,
    *,
    trigger: str,
    config: dict[str, Any] | None = None,
    bucket: str | None = None,
) -> str:
    """Record a run and publish it; raises ActiveRunError while another is active, and the
    publisher's BrokerUnavailableError (nothing recorded) when the broker is down."""
    if ctx.publisher is not None:
        ctx.publisher.check()
    run_id = record_run(ctx, trigger=trigger, config=config, bucket=bucket)
    top_up(ctx, (UnitKind.TRAIN,))
    return run_id
