"""How a training run's models are judged, with no database or queue: scores on the clips
labelling makes, the trivial baselines on the same clips, and the promotion decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from packsight.labels.metrics import (
    ClipShape,
    Evaluation,
    beats_baselines,
    chance_predictions,
    constant_predictions,
    evaluate,
    is_better,
    majority_predictions,
)
from packsight.labels.prediction import ClipPrediction
from packsight.labels.prior import TransitionPrior
from packsight.labels.taxonomy import Taxonomy
from packsight.labels.timeline import ClipAnswer, smooth
from packsight.training.examples import TrainingExample

Predictions = dict[str, ClipPrediction | None]  # by clip id; None: no valid answer


@dataclass(frozen=True)
class Scores:
    """A model's scores on some clips: its answers as they are, and smoothed into whole-video
    timelines with a transition prior (None without one)."""

    raw: Evaluation
    smoothed: Evaluation | None = None


def score(
    labeler,
    examples: Sequence[TrainingExample],
    taxonomy: Taxonomy,
    on_clips: Callable[[int], None] | None = None,
    prior: TransitionPrior | None = None,
) -> Scores:
    """OCA, tIoU@0.5 and AA@1 of a loaded `Labeler` on `examples` (a clip the model gives no
    valid answer for counts as wrong), raw and, with `prior`, smoothed over each video's clips;
    `on_clips(done)` follows the way through them."""
    predictions = predict(labeler, examples, on_clips)
    truths = [e.truth for e in examples]
    raw = evaluate(predictions, truths, taxonomy)
    if prior is None:
        return Scores(raw)
    smoothed = smoothed_predictions(examples, predictions, prior)
    return Scores(raw, evaluate(smoothed, truths, taxonomy))


def smoothed_predictions(
    examples: Sequence[TrainingExample], predictions: Predictions, prior: TransitionPrior
) -> Predictions:
    """Each video's clips (in time order) smoothed together with the prior."""
    videos: dict[str, list[TrainingExample]] = {}
    for example in examples:
        videos.setdefault(example.video, []).append(example)
    smoothed: Predictions = {}
    for clips in videos.values():
        clips.sort(key=lambda e: (e.start_frame, e.clip_id))
        answers = [
            ClipAnswer(e.clip_id, e.start_frame, e.start_frame + e.clip_frame_count,
                       predictions[e.clip_id])
            for e in clips
        ]  # fmt: skip
        for clip, answer in zip(clips, smooth(answers, prior), strict=True):
            smoothed[clip.clip_id] = answer
    return smoothed


def predict(
    labeler, examples: Sequence[TrainingExample], on_clips: Callable[[int], None] | None = None
) -> Predictions:
    """The labeler's answer for every example, by clip id."""
    from packsight.training.batches import clip_input

    results: list = []
    # A few of the labeler's batches at a time, so that progress shows between them.
    step = labeler.batch_size * 4
    for start in range(0, len(examples), step):
        chunk = examples[start : start + step]
        results += labeler.predict([clip_input(e) for e in chunk])
        if on_clips is not None:
            on_clips(len(results))
    return {
        e.clip_id: r if isinstance(r, ClipPrediction) else None
        for e, r in zip(examples, results, strict=True)
    }


def baseline_scores(
    training: Sequence[TrainingExample], examples: Sequence[TrainingExample], taxonomy: Taxonomy
) -> dict[str, Evaluation]:
    """The trivial models' scores on `examples`: the training labels' majority (operation, whole
    clip, next operation), the best constant answer on these very clips, and chance."""
    shapes = [ClipShape(e.clip_id, e.clip_frame_count) for e in examples]
    truths = [e.truth for e in examples]
    majority = majority_predictions([e.truth for e in training], shapes)
    return {
        "majority": evaluate(majority, truths, taxonomy),
        "constant": evaluate(constant_predictions(truths, shapes), truths, taxonomy),
        "chance": evaluate(chance_predictions(shapes, taxonomy), truths, taxonomy),
    }


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: Evaluation,
    champion: Evaluation | None,
    base: Evaluation,
    *,
    primary: str,
    tolerance: float,
    baselines: Mapping[str, Evaluation],
    margin: float,
) -> Decision:
    """Promote the candidate only if it beats the serving model (the base when no adapter has
    been promoted yet) on `primary`, losing at most `tolerance` on the other metrics, and beats
    every trivial baseline on OCA and AA@1 by `margin`."""
    promote, reason = is_better(
        candidate, champion if champion is not None else base, primary=primary, tolerance=tolerance
    )
    against = "champion" if champion is not None else "base model (no champion yet)"
    reason = f"{reason} (compared with the {against})"
    if not promote:
        return Decision(False, reason)
    above, why = beats_baselines(candidate, baselines, margin=margin)
    if not above:
        return Decision(False, f"Keep the champion: {why}, though it beats the {against}.")
    return Decision(True, f"{reason}; it {why}.")
