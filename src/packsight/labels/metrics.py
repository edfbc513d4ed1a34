"""The challenge's evaluation: OCA, tIoU@0.5 and AA@1 over labelled clips, and results.json.

Pure logic on `ClipPrediction`s and ground truths, so the same code scores a base model, a
fine-tuned adapter and a promotion decision.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import Taxonomy

NONE_LABEL = "(none)"  # the confusion column of clips the model gave no usable answer for
METRIC_NAMES = ("OCA", "tIoU@0.5", "AA@1")
IOU_THRESHOLD = 0.5
# Metrics are fractions of the same clip count, but 0.50 - 0.48 is 0.020000000000000018 in floats:
# a drop of exactly the tolerance must not be refused over rounding noise.
FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class ClipTruth:
    """The ground truth of one clip; frames are clip-relative with an inclusive end."""

    clip_id: str
    dominant_operation: str
    start_frame: int
    end_frame: int
    next_operation: str


@dataclass(frozen=True)
class Evaluation:
    oca: float
    tiou_at_05: float
    aa_at_1: float
    count: int
    missing: int
    confusion: dict[tuple[str, str], int]
    # tIoU@0.5 counted only where the operation is right too, and the mean IoU: the challenge's
    # tIoU@0.5 alone rewards a segment spanning the whole clip, whatever the class.
    tiou_matched_at_05: float = 0.0
    mean_tiou: float = 0.0

    def metric(self, name: str) -> float:
        """A metric by its results.json name ("OCA", "tIoU@0.5", "AA@1")."""
        values = {"OCA": self.oca, "tIoU@0.5": self.tiou_at_05, "AA@1": self.aa_at_1}
        if name not in values:
            raise ValueError(f"unknown metric {name!r}: use one of {', '.join(METRIC_NAMES)}")
        return values[name]

    def to_dict(self) -> dict[str, float | int]:
        """The block results.json holds per model."""
        return {
            **{name: self.metric(name) for name in METRIC_NAMES},
            "tIoU@0.5 class-matched": self.tiou_matched_at_05,
            "mean tIoU": self.mean_tiou,
            "clips": self.count,
        }


def temporal_iou(pred: tuple[int, int], truth: tuple[int, int]) -> float:
    """Intersection over union of two inclusive frame ranges (start, end).

    Inclusive, as the model reports segments: (5, 5) is one frame, and (0, 5) and (5, 9) share one.
    """
    for name, (start, end) in (("pred", pred), ("truth", truth)):
        if start > end:
            raise ValueError(f"{name} range starts after it ends: ({start}, {end})")
    overlap = max(0, min(pred[1], truth[1]) - max(pred[0], truth[0]) + 1)
    union = (pred[1] - pred[0] + 1) + (truth[1] - truth[0] + 1) - overlap
    return overlap / union


def evaluate(
    predictions: Mapping[str, ClipPrediction | None],
    truths: Sequence[ClipTruth],
    taxonomy: Taxonomy,
) -> Evaluation:
    """Score predictions (by clip id) against the truths of a fixed clip set.

    A clip with no prediction (absent from `predictions` or None: the model's answer did not
    parse) counts as wrong on all three metrics, so a model cannot improve its score by failing
    on hard clips; it appears in the confusion under the predicted label "(none)". Predictions for
    clips outside `truths` are ignored. tIoU@0.5 compares segments whatever the predicted class,
    as the challenge defines it.
    """
    if not truths:
        raise ValueError("no clips to evaluate: the truth set is empty")
    seen: set[str] = set()
    for truth in truths:
        if truth.clip_id in seen:
            raise ValueError(f"clip {truth.clip_id!r} appears twice in the truths")
        seen.add(truth.clip_id)
        for op in (truth.dominant_operation, truth.next_operation):
            if op not in taxonomy.operations:
                raise ValueError(
                    f"clip {truth.clip_id!r}: {op!r} is not an operation of taxonomy "
                    f"{taxonomy.name!r}"
                )

    correct_op = good_segment = matched_segment = correct_next = missing = 0
    iou_sum = 0.0
    confusion: Counter[tuple[str, str]] = Counter()
    for truth in truths:
        pred = predictions.get(truth.clip_id)
        if pred is None:
            missing += 1
            confusion[(truth.dominant_operation, NONE_LABEL)] += 1
            continue
        confusion[(truth.dominant_operation, pred.dominant_operation)] += 1
        right_op = pred.dominant_operation == truth.dominant_operation
        correct_op += right_op
        correct_next += pred.anticipated_next_operation == truth.next_operation
        iou = temporal_iou((pred.start_frame, pred.end_frame), (truth.start_frame, truth.end_frame))
        good_segment += iou >= IOU_THRESHOLD
        matched_segment += right_op and iou >= IOU_THRESHOLD
        iou_sum += iou

    count = len(truths)
    return Evaluation(
        oca=correct_op / count,
        tiou_at_05=good_segment / count,
        aa_at_1=correct_next / count,
        count=count,
        missing=missing,
        confusion=dict(confusion),
        tiou_matched_at_05=matched_segment / count,
        mean_tiou=iou_sum / count,
    )


@dataclass(frozen=True)
class ClipShape:
    """What a baseline may know of a clip: its id and how many frames its window has."""

    clip_id: str
    frame_count: int


def majority_predictions(
    training: Sequence[ClipTruth], clips: Sequence[ClipShape]
) -> dict[str, ClipPrediction]:
    """The trivial model every fine-tune must beat: the training labels' most common operation,
    the whole clip as its segment, and the most common next operation, for every clip."""
    if not training:
        raise ValueError("no training truths to take the majority of")
    operation = _most_common(t.dominant_operation for t in training)
    following = _most_common(t.next_operation for t in training)
    return {
        clip.clip_id: ClipPrediction(operation, 0, clip.frame_count - 1, following, 1.0)
        for clip in clips
    }


def constant_predictions(
    truths: Sequence[ClipTruth], clips: Sequence[ClipShape]
) -> dict[str, ClipPrediction]:
    """The best any one answer given to every clip scores here: the evaluated clips' own most
    common operation and next operation, the whole clip as segment. A model that collapsed onto
    one class can at best tie it, whichever class it chose."""
    return majority_predictions(truths, clips)


def chance_predictions(
    clips: Sequence[ClipShape], taxonomy: Taxonomy, *, seed: int = 42
) -> dict[str, ClipPrediction]:
    """Uniform guesses (operation, next operation, segment bounds), seeded: what a model that
    learned nothing scores, on average."""
    rng = random.Random(seed)
    guesses = {}
    for clip in clips:
        start, end = sorted(rng.randrange(clip.frame_count) for _ in range(2))
        operation, following = (rng.choice(taxonomy.operations) for _ in range(2))
        guesses[clip.clip_id] = ClipPrediction(operation, start, end, following, 0.0)
    return guesses


def _most_common(values: Iterable[str]) -> str:
    counts = Counter(values)
    # Ties go to the name first in alphabetical order: the same answer on every run.
    return min(counts, key=lambda value: (-counts[value], value))


def describe_majority(training: Sequence[ClipTruth]) -> dict[str, str]:
    """What the majority baseline answers, for reports."""
    return {
        "operation": _most_common(t.dominant_operation for t in training),
        "next_operation": _most_common(t.next_operation for t in training),
        "segment": "whole clip",
    }


def results_json(
    base: Evaluation, finetuned: Evaluation, *, base_model: str, finetuned_model: str
) -> dict[str, dict[str, str | float | int]]:
    """The challenge's results.json: one block of the three metrics per model."""
    return {
        "base_model": {"model": base_model, **base.to_dict()},
        "finetuned_model": {"model": finetuned_model, **finetuned.to_dict()},
    }


def is_better(
    candidate: Evaluation,
    champion: Evaluation,
    *,
    primary: str = "AA@1",
    tolerance: float = 0.02,
) -> tuple[bool, str]:
    """Whether `candidate` should replace `champion`, and one sentence saying why.

    Promote only when the candidate is strictly better on `primary` and no other metric is worse
    by more than `tolerance`: a gain in anticipation must not be bought with a collapse elsewhere.
    """
    if primary not in METRIC_NAMES:
        raise ValueError(
            f"unknown primary metric {primary!r}: use one of {', '.join(METRIC_NAMES)}"
        )
    if tolerance < 0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    if candidate.count != champion.count:
        return False, (
            f"Keep the champion: the candidate was scored on {candidate.count} clips and the "
            f"champion on {champion.count}, so the scores are not comparable."
        )
    new, old = candidate.metric(primary), champion.metric(primary)
    if not new > old:
        return False, f"Keep the champion: {primary} {new:.3f} is not above {old:.3f}."
    for name in METRIC_NAMES:
        drop = champion.metric(name) - candidate.metric(name)
        if name != primary and drop > tolerance + FLOAT_SLACK:
            return False, (
                f"Keep the champion: {primary} rises {old:.3f} -> {new:.3f} but {name} drops "
                f"{champion.metric(name):.3f} -> {candidate.metric(name):.3f}, more than the "
                f"{tolerance:.3f} tolerance."
            )
    return True, (
        f"Promote: {primary} rises {old:.3f} -> {new:.3f} and no other metric drops by more "
        f"than {tolerance:.3f}."
    )


GATED_BY_BASELINES = ("OCA", "AA@1")


def beats_baselines(
    candidate: Evaluation, baselines: Mapping[str, Evaluation], *, margin: float = 0.05
) -> tuple[bool, str]:
    """Whether the candidate beats every trivial baseline on OCA and AA@1 by `margin`, and
    one sentence naming the first it fails. A model no better than answering the most common
    operation, or than guessing, must not serve however it compares with the champion."""
    for name, baseline in baselines.items():
        for metric in GATED_BY_BASELINES:
            mine, theirs = candidate.metric(metric), baseline.metric(metric)
            if mine + FLOAT_SLACK < theirs + margin:
                return False, (
                    f"{metric} {mine:.3f} does not beat the {name} baseline ({theirs:.3f}) by "
                    f"the {margin:.3f} margin"
                )
    return True, f"beats every baseline ({', '.join(baselines)}) by {margin:.3f} or more"


def confusion_matrix(
    confusion: Mapping[tuple[str, str], int], operations: Sequence[str]
) -> list[list[int]]:
    """Rows are true operations, columns predicted ones, both in taxonomy order.

    A last "(none)" column is added only when some clip had no prediction.
    """
    columns = list(operations)
    if any(predicted == NONE_LABEL for _, predicted in confusion):
        columns.append(NONE_LABEL)
    row_of = {op: i for i, op in enumerate(operations)}
    column_of = {op: i for i, op in enumerate(columns)}
    matrix = [[0] * len(columns) for _ in operations]
    for (true_op, predicted), n in confusion.items():
        if true_op not in row_of or predicted not in column_of:
            raise ValueError(
                f"confusion entry ({true_op!r}, {predicted!r}) names an operation outside "
                f"{', '.join(operations)}"
            )
        matrix[row_of[true_op]][column_of[predicted]] += n
    return matrix
