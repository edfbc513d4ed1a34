"""Scoring a training run's models: base, candidate and champion on the test clips, the
candidate on the validation clips, the trivial baselines beside them, and the run's
results.json."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from packsight.labels.metrics import Evaluation, describe_majority, results_json
from packsight.labels.prior import TransitionPrior
from packsight.labels.taxonomy import Taxonomy
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.training_steps import Progress, RunSpec, free_memory
from packsight.settings import Settings
from packsight.training.examples import TrainingExample
from packsight.training.judging import Decision, Scores, baseline_scores, score
from packsight.training.retraining import Dataset
from packsight.video.sampling import FrameSettings


@dataclass(frozen=True)
class RunVersions:
    base: ModelVersion
    candidate: ModelVersion
    champion: ModelVersion | None  # the serving version before this run, if any


def incomparable(run: RunSpec, versions: RunVersions) -> Decision | None:
    """A refusal when the serving version was trained on other frames than this run: each is
    only fairly scored on its own frames, so their scores on one set of clips compare nothing."""
    champion = versions.champion
    if champion is None:
        return None
    trained = (champion.settings or {}).get("frames") or None
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
class RunEvaluation:
    scores: dict[int, Evaluation]  # on the test clips, by model version id
    validation: Evaluation | None  # the candidate on the validation clips
    # The same models' answers smoothed into whole-video timelines with the run's prior.
    smoothed: dict[int, Evaluation]
    smoothed_validation: Evaluation | None
    test_baselines: dict[str, Evaluation]
    validation_baselines: dict[str, Evaluation]


def evaluate(
    settings: Settings,
    run: RunSpec,
    versions: RunVersions,
    dataset: Dataset,
    adapter: str,
    progress: Progress,
    prior: TransitionPrior,
) -> RunEvaluation:
    """Base, candidate and champion on the test clips, the candidate on the validation clips,
    and the trivial baselines on both."""
    local = {versions.candidate.id: adapter}
    champion = None if incomparable(run, versions) else versions.champion
    # The validation subject decides nothing; its score next to the test score shows whether
    # a candidate merely fits the test subject.
    plan = [("base", versions.base, "test"), ("candidate", versions.candidate, "test")]
    if champion is not None and champion.id not in (versions.base.id, versions.candidate.id):
        plan.append(("champion", champion, "test"))
    if dataset.validation:
        plan.append(("candidate", versions.candidate, "validation"))
    scores: dict[int, Scores] = {}
    validation = None
    for number, (role, version, split) in enumerate(plan, start=1):
        examples = dataset.test if split == "test" else dataset.validation
        where: dict[str, Any] = {"phase": "evaluating", "model": role, "split": split}
        where |= {"clips": len(examples), "evaluation": number, "evaluations": len(plan)}

        def on_clips(done: int, where: dict[str, Any] = where) -> None:
            progress(progress=where | {"clips_done": done})

        on_clips(0)
        result = score_version(settings, version, local, examples, run.taxonomy, on_clips, prior)
        if split == "test":
            scores[version.id] = result
        else:
            validation = result
    return RunEvaluation(
        scores={version_id: s.raw for version_id, s in scores.items()},
        validation=validation.raw if validation else None,
        smoothed={version_id: s.smoothed for version_id, s in scores.items() if s.smoothed},
        smoothed_validation=validation.smoothed if validation else None,
        test_baselines=baseline_scores(dataset.train, dataset.test, run.taxonomy),
        validation_baselines=(
            baseline_scores(dataset.train, dataset.validation, run.taxonomy)
            if dataset.validation
            else {}
        ),
    )


def results_document(
    run: RunSpec,
    versions: RunVersions,
    evaluation: RunEvaluation,
    decision: Decision,
    dataset: Dataset,
    prior: TransitionPrior,
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
        # Whole-video timelines: the same answers smoothed with the procedure's prior, learned
        # from the training videos' labels (the serving path scores its raw answers above).
        "smoothed": {
            role: {"model": version.name, **evaluation.smoothed[version.id].to_dict()}
            for role, version in (
                ("base_model", base),
                ("finetuned_model", candidate),
                ("champion_model", champion),
            )
            if version is not None and version.id in evaluation.smoothed
        },
        "smoothed_validation": evaluation.smoothed_validation.to_dict()
        if evaluation.smoothed_validation
        else None,
        "prior": prior.to_json(),
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


def score_version(
    settings: Settings,
    version: ModelVersion,
    local: dict[int, str],
    examples: Sequence[TrainingExample],
    taxonomy: Taxonomy,
    on_clips: Callable[[int], None] | None = None,
    prior: TransitionPrior | None = None,
) -> Scores:
    from packsight.pipeline.labelling import load_version

    labeler = load_version(version, settings, adapter=local.get(version.id))
    try:
        return score(labeler, examples, taxonomy, on_clips, prior)
    finally:
        del labeler
        free_memory()
