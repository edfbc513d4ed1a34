"""Training stage: gather verified labels, fine-tune a QLoRA adapter, score base / candidate /
champion on the fixed test split, store everything, and promote the candidate only if it wins.

Runs on its own GPU queue (`gpu.t4.train`), one run at a time (see models/training_runs.py).
A worker lost mid-run gets the task redelivered (acks_late), and training resumes from the last
checkpoint, which is also kept in object storage so another machine can continue it.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from packsight.metrics import Evaluation, results_json
from packsight.models.db import session_scope
from packsight.models.evaluations import record_evaluation
from packsight.models.jobs import get_or_create_model_version, register_attempt
from packsight.models.promotions import promote, serving_version
from packsight.models.tables import ModelVersion, TrainingRunState
from packsight.models.training_runs import (
    ActiveRunError,
    claim_run,
    finish_run,
    heartbeat,
    labelled_videos,
    start_run,
)
from packsight.retraining import LabelledVideo, Splits, build_dataset, decide, score
from packsight.settings import Settings, get_settings
from packsight.storage import (
    ObjectNotFoundError,
    artifact_uri,
    download_folder,
    open_artifact_storage,
    open_storage,
    resolve_artifact,
    upload_folder,
)
from packsight.taxonomy import Taxonomy, load_taxonomy
from packsight.workers.app import SCHEDULED_TRAINING_TASK, TRAIN_TASK, app, retry_or_give_up

log = logging.getLogger(__name__)
TEST_SPLIT = "test"


class TrainingRefusedError(ValueError):
    """The run cannot succeed (no data, attempts used up); retrying will not help."""


def training_params(
    settings: Settings, *, config: dict[str, Any] | None = None, bucket: str | None = None
) -> dict[str, Any]:
    """Everything a run depends on, fixed when it is queued: a redelivered or resumed run trains
    with what it started with, whatever the settings say by then."""
    from packsight.vlm.training import TrainingConfig

    overrides = {**settings.training_config, **(config or {})}
    known = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    overrides.setdefault("quantization", settings.quantization)
    try:
        training = TrainingConfig(**overrides)
        training.total_steps(1)  # type errors in numbers surface here rather than mid-run
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid training settings {overrides}: {exc}") from exc
    return {
        "config": json.loads(json.dumps(asdict(training))),
        "bucket": bucket or settings.training_bucket,
        "splits": {
            "train": list(settings.train_subjects),
            "validation": list(settings.validation_subjects),
            "test": list(settings.test_subjects),
            "test_clips": settings.test_clips,
        },
        "frames_per_clip": settings.frames_per_clip,
        "clip_seconds": settings.clip_seconds,
        "max_side": settings.frame_max_side,
        "promotion": {
            "metric": settings.promotion_metric,
            "tolerance": settings.promotion_tolerance,
        },
    }


def start_training(
    settings: Settings,
    *,
    trigger: str,
    config: dict[str, Any] | None = None,
    bucket: str | None = None,
) -> str:
    """Record a queued run and queue its task; raises ActiveRunError while another is active.
    Embedded (no broker), the run executes here before this returns."""
    run_id = record_run(settings, trigger=trigger, config=config, bucket=bucket)
    queue_run(run_id)
    return run_id


def queue_run(run_id: str) -> None:
    train_adapter_task.apply_async(args=[run_id])


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
            params=params,
            stale_after_s=settings.training_stale_after_s,
        )
        return run.id


@app.task(name=SCHEDULED_TRAINING_TASK)
def start_scheduled_training_task() -> str | None:
    try:
        return start_training(get_settings(), trigger="schedule")
    except ActiveRunError as exc:
        log.info("nightly training skipped: %s", exc)
        return None


@app.task(name=TRAIN_TASK, bind=True)
def train_adapter_task(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    try:
        run_training(settings, run_id=run_id, task_id=self.request.id or f"local-{run_id}")
    except TrainingRefusedError as exc:
        fail_run(settings, run_id, str(exc))
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        retry_or_give_up(self, exc, lambda error: fail_run(get_settings(), run_id, error))


def fail_run(settings: Settings, run_id: str, error: str) -> None:
    with session_scope(settings.resolved_database_url) as session:
        finish_run(session, run_id, state=TrainingRunState.FAILED, error=error)


def run_training(settings: Settings, *, run_id: str, task_id: str) -> None:
    db = settings.resolved_database_url
    with session_scope(db) as session:
        run = claim_run(session, run_id)
        if run is None:
            log.info("training run %s is already final; nothing to do", run_id)
            return
        attempts = register_attempt(session, task_id=f"train:{task_id}")
        params, base_model = run.params, run.base_model
        quantization, taxonomy_name = run.quantization, run.taxonomy
    if attempts > settings.max_attempts:
        raise TrainingRefusedError(
            f"gave up after {settings.max_attempts} attempts: the training worker died each time"
        )

    def beat(**progress: Any) -> None:
        with session_scope(db) as session:
            heartbeat(session, run_id, **progress)

    taxonomy = load_taxonomy(taxonomy_name)
    work = settings.data_dir.resolve() / "training-runs" / run_id
    store = _RunStore(settings, run_id)
    dataset = _dataset(settings, params, taxonomy, work, beat)
    beat(dataset=dataset.summary())

    from packsight.vlm.training import TrainingConfig, train_adapter

    config = TrainingConfig(
        **{**params["config"], "train_modules": tuple(params["config"]["train_modules"])}
    )
    total = config.total_steps(len(dataset.train))
    beat(total_steps=total)
    store.restore_checkpoint(work)

    def on_step(step: int, loss: float) -> None:
        beat(step=step)
        if step % config.checkpoint_every == 0 and step < total:
            store.save_checkpoint(work, step)

    result = train_adapter(
        model=base_model,
        train=dataset.train,
        out_dir=work,
        config=config,
        taxonomy=taxonomy,
        on_step=on_step,
        device=settings.device,
    )
    adapter = store.publish_adapter(result.adapter_dir)
    _free_memory()

    with session_scope(db) as session:
        base = get_or_create_model_version(
            session,
            base_model=base_model,
            adapter=None,
            quantization=quantization,
            taxonomy=taxonomy_name,
        )
        candidate = get_or_create_model_version(
            session,
            base_model=base_model,
            adapter=adapter,
            quantization=quantization,
            taxonomy=taxonomy_name,
        )
        champion = serving_version(
            session, base_model=base_model, quantization=quantization, taxonomy=taxonomy_name
        )
        session.expunge_all()
    beat(candidate_version_id=candidate.id, champion_version_id=champion and champion.id)

    local_adapters = {candidate.id: str(result.adapter_dir)}
    scores: dict[int, Evaluation] = {}
    for version in (base, candidate, champion):
        if version is not None and version.id not in scores:
            scores[version.id] = _score(settings, version, local_adapters, dataset.test, taxonomy)
            beat()
    # The validation subject is not used to decide anything; its score next to the test score
    # shows whether a candidate merely fits the test subject.
    validation = (
        _score(settings, candidate, local_adapters, dataset.validation, taxonomy)
        if dataset.validation
        else None
    )
    promotion = params["promotion"]
    decision = decide(
        scores[candidate.id],
        scores[champion.id] if champion is not None else None,
        scores[base.id],
        primary=promotion["metric"],
        tolerance=promotion["tolerance"],
    )
    results = results_json(
        scores[base.id], scores[candidate.id], base_model=base.name, finetuned_model=candidate.name
    ) | {
        "champion_model": {"model": champion.name, **scores[champion.id].to_dict()}
        if champion is not None
        else None,
        "promotion": {"promoted": decision.promote, "reason": decision.reason},
        "validation": validation.to_dict() if validation is not None else None,
        "training_run": run_id,
        "test_clip_ids": [e.clip_id for e in dataset.test],
    }
    store.put_json("results.json", results)

    with session_scope(db) as session:
        for version_id, evaluation in scores.items():
            record_evaluation(
                session, model_version_id=version_id, split=TEST_SPLIT, evaluation=evaluation
            )
        if validation is not None:
            record_evaluation(
                session, model_version_id=candidate.id, split="validation", evaluation=validation
            )
        finished = finish_run(
            session,
            run_id,
            state=TrainingRunState.SUCCEEDED,
            decision="promoted" if decision.promote else "rejected",
            decision_reason=decision.reason,
            results=results,
            artifacts_uri=store.uri,
            step=result.steps,
        )
        # Only a run that still owned its slot may switch the serving model.
        if finished and decision.promote:
            promote(
                session,
                candidate.id,
                reason=decision.reason,
                previous=champion or base,
                training_run_id=run_id,
            )
    shutil.rmtree(work, ignore_errors=True)
    log.info("training run %s: %s", run_id, decision.reason)


def _dataset(settings: Settings, params: dict[str, Any], taxonomy: Taxonomy, work: Path, beat):  # type: ignore[no-untyped-def]
    with session_scope(settings.resolved_database_url) as session:
        videos = labelled_videos(session, taxonomy=taxonomy.name, bucket=params["bucket"])
    source = open_storage(settings)
    folder = work / "videos"

    def fetch(video: LabelledVideo) -> Path:
        path = folder / video.bucket / video.key
        path.parent.mkdir(parents=True, exist_ok=True)
        source.download(video.bucket, video.key, path)
        return path

    split = params["splits"]
    splits = Splits(
        train=tuple(split["train"]),
        validation=tuple(split["validation"]),
        test=tuple(split["test"]),
        test_clips=split["test_clips"],
    )
    dataset = build_dataset(
        videos,
        fetch,
        taxonomy=taxonomy,
        splits=splits,
        frames_per_clip=params["frames_per_clip"],
        clip_seconds=params["clip_seconds"],
        max_side=params["max_side"],
        on_video=lambda _: beat(),
    )
    shutil.rmtree(folder, ignore_errors=True)
    where = f"bucket {params['bucket']!r}" if params["bucket"] else "any bucket"
    for name, subjects in (("training", splits.train), ("test", splits.test)):
        examples = dataset.train if name == "training" else dataset.test
        if not examples:
            raise TrainingRefusedError(
                f"no {name} clips: no verified {taxonomy.name} labels in {where} for a video of "
                f"subjects {', '.join(subjects)} ({len(videos)} labelled videos, "
                f"{len(dataset.skipped)} unreadable)"
            )
    return dataset


def _score(  # type: ignore[no-untyped-def]
    settings: Settings, version: ModelVersion, local: dict[int, str], examples, taxonomy
) -> Evaluation:
    from packsight.vlm.labeler import load_labeler

    adapter = local.get(version.id, version.adapter_uri)
    if adapter is not None:
        adapter = resolve_artifact(
            adapter, open_artifact_storage(settings), settings.data_dir / "adapters"
        )
    labeler = load_labeler(
        model=version.base_model,
        adapter=adapter,
        quantization=version.quantization,  # type: ignore[arg-type]
        device=settings.device,
        taxonomy=taxonomy,
        batch_size=settings.gpu_batch_size,
    )
    try:
        return score(labeler, examples, taxonomy)
    finally:
        del labeler
        _free_memory()


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _RunStore:
    """A run's objects: artifact://<artifact bucket>/training-runs/<run id>/..."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.storage = open_artifact_storage(settings)
        self.bucket = settings.artifact_bucket
        self.prefix = f"training-runs/{run_id}"
        self.uri = artifact_uri(self.bucket, self.prefix)

    def put_json(self, name: str, value: object) -> None:
        data = (json.dumps(value, indent=2) + "\n").encode()
        self.storage.put_bytes(self.bucket, f"{self.prefix}/{name}", data)

    def publish_adapter(self, folder: Path) -> str:
        upload_folder(self.storage, folder, self.bucket, f"{self.prefix}/adapter")
        return artifact_uri(self.bucket, f"{self.prefix}/adapter")

    def save_checkpoint(self, work: Path, step: int) -> None:
        # Each checkpoint under its own prefix, then the pointer: a crash mid-upload leaves the
        # pointer on the previous complete one.
        upload_folder(self.storage, work / "checkpoint", self.bucket, self._checkpoint(step))
        self.put_json("checkpoints/latest.json", {"step": step})

    def restore_checkpoint(self, work: Path) -> None:
        """Bring the latest stored checkpoint to a machine that has none of its own."""
        if (work / "checkpoint" / "state.json").exists():
            return
        try:
            latest = json.loads(
                self.storage.get_bytes(self.bucket, f"{self.prefix}/checkpoints/latest.json")
            )
        except ObjectNotFoundError:
            return
        work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(work / "checkpoint", ignore_errors=True)
        download_folder(
            self.storage, self.bucket, self._checkpoint(latest["step"]), work / "checkpoint"
        )

    def _checkpoint(self, step: int) -> str:
        return f"{self.prefix}/checkpoints/step-{step:06d}"
