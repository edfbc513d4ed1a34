"""Training stage: gather verified labels, fine-tune a QLoRA adapter, score base / candidate /
champion on the fixed test split, store everything, and promote the candidate only if it wins.

Runs on its own GPU queue (`gpu.t4.train`), one run at a time (see models/training_runs.py).
A worker lost mid-run stops renewing its unit's lease; the sweeper publishes the unit again and
training resumes from the last checkpoint, which is also kept in object storage so another
machine can continue it.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from sqlalchemy.orm import Session

from packsight.labels.prior import TransitionPrior, learn_prior
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.jobs import get_or_create_model_version
from packsight.models.promotions import serving_version
from packsight.models.training_runs import (
    RunLostError,
    RunOutcome,
    claim_run,
    complete_run,
    heartbeat,
)
from packsight.models.work import UnitRef, finish_unit
from packsight.pipeline.context import Context
from packsight.pipeline.evaluation import (
    RunVersions,
    evaluate,
    incomparable,
    results_document,
)
from packsight.pipeline.training_runs import fail_run
from packsight.pipeline.training_steps import (
    RunSpec,
    TrainingRefusedError,
    fit_adapter,
    gather_dataset,
)
from packsight.pipeline.units import Lease
from packsight.training.artifacts import RunArtifacts
from packsight.training.judging import Decision, decide
from packsight.training.retraining import RunParams
from packsight.vlm.answer import ANSWER_FORMAT

log = logging.getLogger(__name__)


def train_run(ctx: Context, unit: UnitRef, lease: Lease) -> None:
    """The training stage: one delivery of a run's unit."""
    run_id = unit.training_run_id
    assert run_id is not None, "a training unit names its run"
    try:
        run_training(ctx, run_id=run_id, lease=lease)
    except TrainingRefusedError as exc:
        reason = str(exc)

        def refuse(session: Session) -> None:
            finish_unit(session, unit.id, lease.token)
            fail_run(session, run_id, reason)

        ctx.transaction(refuse)
    except RunLostError as exc:
        # A later delivery owns the run now (or it was declared abandoned): stop quietly.
        log.warning("training run %s: this delivery stops: %s", run_id, exc)


def give_up_training(session: Session, unit: UnitRef, error: str) -> None:
    assert unit.training_run_id is not None, "a training unit names its run"
    fail_run(session, unit.training_run_id, error)


def run_training(ctx: Context, *, run_id: str, lease: Lease) -> None:
    settings = ctx.settings
    run = ctx.transaction(lambda s: _claim(s, run_id))
    if run is None:
        log.info("training run %s is already final; nothing to do", run_id)
        ctx.transaction(lambda s: finish_unit(s, lease.unit_id, lease.token))
        return

    shown: dict[str, Any] = {}  # the phase's details accumulate: the last loss stays in view

    def progress(**fields: Any) -> None:
        lease.check()
        if "progress" in fields:
            shown.update(fields["progress"])
            fields["progress"] = dict(shown)
        ctx.transaction(lambda s: heartbeat(s, run_id, run.claim, **fields))

    work = settings.data_dir.resolve() / "training-runs" / run_id
    artifacts = RunArtifacts(ctx.artifacts, settings.artifact_bucket, run_id)
    dataset = gather_dataset(ctx, run, work, artifacts, progress)
    progress(dataset=dataset.summary())
    artifacts.put_jsonl("dataset.jsonl", dataset.records())
    adapter_dir, steps = fit_adapter(settings, run, dataset, work, artifacts, progress)
    adapter_uri = artifacts.publish_adapter(adapter_dir)
    # What the training videos' labels say of the procedure's order, for whole-video timelines.
    prior = learn_prior(
        dataset.window_truths, run.taxonomy, segment_seconds=dataset.segment_seconds
    )
    versions = ctx.transaction(lambda s: _versions(s, run, adapter_uri, prior))
    progress(
        candidate_version_id=versions.candidate.id,
        champion_version_id=versions.champion.id if versions.champion else None,
    )
    evaluation = evaluate(settings, run, versions, dataset, str(adapter_dir), progress, prior)
    decision = incomparable(run, versions) or decide(
        evaluation.scores[versions.candidate.id],
        evaluation.scores[versions.champion.id] if versions.champion else None,
        evaluation.scores[versions.base.id],
        primary=run.params.promotion_metric,
        tolerance=run.params.promotion_tolerance,
        baselines=evaluation.test_baselines,
        margin=run.params.baseline_margin,
    )
    results = results_document(run, versions, evaluation, decision, dataset, prior)
    outcome = RunOutcome(
        base=versions.base,
        candidate=versions.candidate,
        champion=versions.champion,
        test_scores=evaluation.scores,
        validation=evaluation.validation,
        test_baselines=evaluation.test_baselines,
        validation_baselines=evaluation.validation_baselines,
        decision=decision,
        results=results,
        artifacts_uri=artifacts.uri,
        steps=steps,
    )

    def complete(session: Session) -> Decision:
        finish_unit(session, lease.unit_id, lease.token)
        return complete_run(session, run_id, run.claim, outcome)

    decision = ctx.transaction(complete)
    artifacts.put_json("results.json", results)
    # A copy inside the adapter folder, so the adapter carries its metrics wherever it is copied.
    artifacts.put_json("adapter/results.json", results)
    # The run is final: its checkpoints can no longer be resumed from.
    artifacts.discard_checkpoints()
    shutil.rmtree(work, ignore_errors=True)
    log.info("training run %s: %s", run_id, decision.reason)


def _claim(session: Session, run_id: str) -> RunSpec | None:
    row = claim_run(session, run_id)
    if row is None:
        return None
    assert row.claim is not None  # claim_run just gave it a token
    return RunSpec(
        id=row.id,
        claim=row.claim,
        params=RunParams.from_json(row.params),
        base_model=row.base_model,
        quantization=row.quantization,
        taxonomy=load_taxonomy(row.taxonomy),
    )


def _versions(
    session: Session, run: RunSpec, adapter_uri: str, prior: TransitionPrior
) -> RunVersions:
    scope = {
        "base_model": run.base_model,
        "quantization": run.quantization,
        "taxonomy": run.taxonomy.name,
    }
    candidate = get_or_create_model_version(session, adapter=adapter_uri, **scope)
    # The adapter is served as it was trained: these frames, this answer format; its timelines
    # use the prior learned from the same labels.
    candidate.settings = {
        "frames": run.params.frames.to_json(),
        "answer": ANSWER_FORMAT,
        "prior": prior.to_json(),
    }
    versions = RunVersions(
        base=get_or_create_model_version(session, adapter=None, **scope),
        candidate=candidate,
        champion=serving_version(session, **scope),
    )
    session.flush()
    session.expunge_all()  # plain snapshots from here on
    return versions
