"""Which clips are most worth a person's time. A check pays off where the model is unsure, so
each labelled clip is scored by what signals doubt:

- its confidence is low;
- its two most likely operations are close (a small top-2 margin);
- the procedure's prior disagrees (the smoothed timeline names another operation);
- another model version (the candidate beside the serving one) names another operation.

A clip's score is its uncertainty, 1 - margin (1 - confidence where the probabilities are not
known; the margin is never above the confidence, so it is the stricter of the two), plus 1 for
each disagreement: a contradicted answer is a likelier error than an unsure one, two
disagreements outrank one, and among equals the less certain comes first. The reasons travel
with the clip, in words a reviewer can read. Pure: answers in, ranked reasons out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from packsight.labels.prediction import ClipPrediction

DISAGREEMENT = 1.0  # what one disagreement adds: as much as the most uncertain answer


@dataclass(frozen=True)
class Doubt:
    score: float
    reasons: tuple[str, ...]
    margin: float | None  # top-2 margin of the operation probabilities, when known


def top_two(
    probabilities: Sequence[float], operations: Sequence[str]
) -> tuple[tuple[str, float], tuple[str, float]]:
    """The two most likely operations with their probabilities, most likely first."""
    if len(probabilities) != len(operations) or len(operations) < 2:
        raise ValueError("need one probability per operation, and two operations at least")
    order = sorted(range(len(operations)), key=lambda i: -probabilities[i])
    first, second = order[0], order[1]
    return (
        (operations[first], probabilities[first]),
        (operations[second], probabilities[second]),
    )


def doubt(
    answer: ClipPrediction,
    operations: Sequence[str],
    *,
    smoothed: ClipPrediction | None = None,
    other: ClipPrediction | None = None,
    other_name: str = "the candidate",
) -> Doubt:
    """How much `answer` (the serving version's raw answer for one clip) deserves a check, given
    the prior-smoothed answer and another version's answer for the same clip, when there are."""
    score = 1.0 - answer.confidence
    reasons = [f"confidence {answer.confidence:.2f}"]
    margin = None
    if answer.operation_probabilities is not None:
        (first, p1), (second, p2) = top_two(answer.operation_probabilities, operations)
        margin = p1 - p2
        score = 1.0 - margin
        reasons.append(f"top-2 margin {margin:.2f} ({first} {p1:.2f}, {second} {p2:.2f})")
    if smoothed is not None and smoothed.dominant_operation != answer.dominant_operation:
        score += DISAGREEMENT
        reasons.append(
            f"the prior says {smoothed.dominant_operation}, the model {answer.dominant_operation}"
        )
    if other is not None and other.dominant_operation != answer.dominant_operation:
        score += DISAGREEMENT
        reasons.append(f"{other_name} says {other.dominant_operation}")
    return Doubt(round(score, 4), tuple(reasons), None if margin is None else round(margin, 4))


def covered(window: tuple[int, int], checked: Sequence[tuple[int, int]]) -> bool:
    """Whether people's labels `checked` ([start, end) frames, not overlapping each other)
    cover at least half of the clip's `window`: such a clip has been reviewed."""
    start, end = window
    overlap = sum(max(0, min(end, e) - max(start, s)) for s, e in checked)
    return 2 * overlap >= end - start
