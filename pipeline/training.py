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
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from packsight.labels.metrics import Evaluation, describe_majority, results_json
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.jobs import get_or_create_model_version
from packsight.models.promotions import serving_version
from packsight.models.tables import ModelVersion
from packsight.models.training_runs import (
    RunLostError,
    RunOutcome,
    claim_run,
    complete_run,
    heartbeat,
)
from packsight.models.work import UnitRef, finish_unit
from packsight.pipeline.context import Context
from packsight.pipeline.training_runs import fail_run
from packsight.pipeline.training_steps import (
    RunSpec,
    TrainingRefusedError,
    fit_adapter,
    free_memory,
    gather_dataset,
)
from packsight.pipeline.units import Lease
from packsight.settings import Settings
from packsight.training.artifacts import RunArtifacts
from packsight.training.retraining import (
    Dataset,
    Decision,
    RunParams,
    baseline_scores,
    decide,
    score,
)
from packsight.video.sampling import FrameSettings
from packsight.vlm.answer import ANSWER_FORMAT

log = logging.getLogger(__name__)


def train_run(ctx: Context, unit: UnitRef, lease: Lease) -> None:
    """The training stage: one delivery of a run's unit."""
    run_id = unit.training_run_id
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
    fail_run(session, unit.training_run_id, error)


@dataclass(frozen=True)
class _Versions:
    base: ModelVersion
    candidate: ModelVersion
    champion: ModelVersion | None  # the serving version before this run, if any


def run_training(ctx: Context, *, run_id: str, lease: Lease) -> None:
    settings = ctx.settings
    run = ctx.transaction(lambda s: _claim(s, run_id))
    if run is None:
        log.info("training run %s is already final; nothing to do", run_id)
        ctx.transaction(lambda s: finish_unit(s, lease.unit_id, lease.token))
        return

    def progress(**fields: Any) -> None:
        lease.check()
        ctx.transaction(lambda s: heartbeat(s, run_id, run.claim, **fields))

    work = settings.data_dir.resolve() / "training-runs" / run_id
    artifacts = RunArtifacts(ctx.artifacts, settings.artifact_bucket, run_id)
    dataset = gather_dataset(ctx, run, work, artifacts, progress)
    progress(dataset=dataset.summary())
    artifacts.put_jsonl("dataset.jsonl", dataset.records())
    adapter_dir, steps = fit_adapter(settings, run, dataset, work, artifacts, progress)
    adapter_uri = artifacts.publish_adapter(adapter_dir)
    versions = ctx.transaction(lambda s: _versions(s, run, adapter_uri))
    progress(
        candidate_version_id=versions.candidate.id,
        champion_version_id=versions.champion.id if versions.champion else None,
    )
    evaluation = _evaluate(settings, run, versions, dataset, str(adapter_dir), progress)
    decision = _incomparable(run, versions) or decide(
        evaluation.scores[versions.candidate.id],
        evaluation.scores[versions.champion.id] if versions.champion else None,
        evaluation.scores[versions.base.id],
        primary=run.params.promotion_metric,
        tolerance=run.params.promotion_tolerance,
        baselines=evaluation.test_baselines,
        margin=run.params.baseline_margin,
    )
    results = _results(run, versions, evaluation, decision, dataset)
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


def _incomparable(run: RunSpec, versions: _Versions) -> Decision | None:
    """A refusal when the serving version was trained on other frames than this run: each is
    only fairly scored on its own frames, so their scores on one set of clips compare nothing."""
    champion = versions.champion
    trained = ((champion.settings or {}).get("frames") if champion is not None else None) or None
    if trained is None or FrameSettings.from_json(trained) == run.params.frames:
        return None
    return Decision(
        False,
        f"Not promoted: the serving version {champion.name} was trained on frames "
        f"{FrameSettings.from_json(trained).key}, this run on {run.params.frames.key}, so they "
        "cannot be scored on the same clips. Train with its frame settings, or roll it back "
        "to compare with the base model.",
    )


@dataclass(frozen=True)
class _Evaluation:
    scores: dict[int, Evaluation]  # on the test clips, by model version id
    validation: Evaluation | None  # the candidate on the validation clips
    test_baselines: dict[str, Evaluation]
    validation_baselines: dict[str, Evaluation]


def _evaluate(  # type: ignore[no-untyped-def]
    settings: Settings, run: RunSpec, versions: _Versions, dataset: Dataset, adapter: str, progress
) -> _Evaluation:
    """Base, candidate and champion on the test clips, the candidate on the validation clips,
    and the trivial baselines on both."""
    local = {versions.candidate.id: adapter}
    scores: dict[int, Evaluation] = {}
    champion = None if _incomparable(run, versions) else versions.champion
    for version in (versions.base, versions.candidate, champion):
        if version is not None and version.id not in scores:
            scores[version.id] = _score(settings, version, local, dataset.test, run.taxonomy)
            progress()
    # The validation subject decides nothing; its score next to the test score shows whether
    # a candidate merely fits the test subject.
    validation = (
        _score(settings, versions.candidate, local, dataset.validation, run.taxonomy)
        if dataset.validation
        else None
    )
    return _Evaluation(
        scores=scores,
        validation=validation,
        test_baselines=baseline_scores(dataset.train, dataset.test, run.taxonomy),
        validation_baselines=(
            baseline_scores(dataset.train, dataset.validation, run.taxonomy)
            if dataset.validation
            else {}
        ),
    )


def _claim(session: Session, run_id: str) -> RunSpec | None:
    row = claim_run(session, run_id)
    if row is None:
        return None
    return RunSpec(
        id=row.id,
        claim=row.claim,
        params=RunParams.from_json(row.params),
        base_model=row.base_model,
        quantization=row.quantization,
        taxonomy=load_taxonomy(row.taxonomy),
    )


def _versions(session: Session, run: RunSpec, adapter_uri: str) -> _Versions:
    scope = {
        "base_model": run.base_model,
        "quantization": run.quantization,
        "taxonomy": run.taxonomy.name,
    }
    candidate = get_or_create_model_version(session, adapter=adapter_uri, **scope)
    # The adapter is served as it was trained: these frames, this answer format.
    candidate.settings = {"frames": run.params.frames.to_json(), "answer": ANSWER_FORMAT}
    versions = _Versions(
        base=get_or_create_model_version(session, adapter=None, **scope),
        candidate=candidate,
        champion=serving_version(session, **scope),
    )
    session.flush()
    session.expunge_all()  # plain snapshots from here on
    return versions


def _results(
    run: RunSpec, versions: _Versions, evaluation: _Evaluation, decision: Decision, dataset: Dataset
) -> dict[str, Any]:
    """results.json: the challenge's base_model / finetuned_model blocks, the trivial baselines
    on the same clips, then the context."""
    base, candidate, champion = versions.base, versions.candidate, versions.champion
    scores = evaluation.scores
    described = {
        "majority": describe_majority([e.truth for e in dataset.train]),
        "constant": describe_majority([e.truth for e in dataset.test]),
        "chance": {},
    }
    return results_json(
        scores[base.id], scores[candidate.id], base_model=base.name, finetuned_model=candidate.name
    ) | {
        "baselines": {
            name: {"model": BASELINE_MODELS[name](described[name]), **score.to_dict()}
            for name, score in evaluation.test_baselines.items()
        },
        "champion_model": {"model": champion.name, **scores[champion.id].to_dict()}
        if champion is not None and champion.id in scores
        else None,
        "promotion": {"promoted": decision.promote, "reason": decision.reason},
        "validation": evaluation.validation.to_dict() if evaluation.validation else None,
        "validation_baselines": {
            name: score.to_dict() for name, score in evaluation.validation_baselines.items()
        },
        "taxonomy": run.taxonomy.name,
        "frames": run.params.frames.to_json(),
        "training_run": run.id,
        "test_clip_ids": [e.clip_id for e in dataset.test],
    }


BASELINE_MODELS = {
    "majority": lambda m: (
        f"always {m['operation']}, the whole clip, next {m['next_operation']} "
        "(the training labels' majority)"
    ),
    "constant": lambda m: (
        f"always {m['operation']}, the whole clip, next {m['next_operation']} "
        "(the best single answer on these clips)"
    ),
    "chance": lambda _: "uniform guesses (seed 42)",
}


def _score(  # type: ignore[no-untyped-def]
    settings: Settings, version: ModelVersion, local: dict[int, str], examples, taxonomy
) -> Evaluation:
    from packsight.pipeline.labelling import load_version

    labeler = load_version(version, settings, adapter=local.get(version.id))
    try:
        return score(labeler, examples, taxonomy)
    finally:
        del labeler
        free_memory()
