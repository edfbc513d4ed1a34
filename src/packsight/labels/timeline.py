"""A whole video's operations from its clips' answers and the procedure's transition prior.

Each clip's answer carries the model's probability for every operation. A hidden Markov model
whose states are the operations, with the prior's window-to-window transitions and those
probabilities as evidence, gives the most likely sequence of operations (Viterbi): an isolated
answer that the procedure makes implausible gives way to its neighbours, a confident one stands.
The next operation of a clip then weighs the model's own answer against what the prior says
follows the clip's (smoothed) operation, or, in a pause, the operation before it; it looks only
at the clip and the ones before it, as anticipation must. Clips merge into a timeline of
segments, their edges placed by the clips' in-clip segments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from packsight.labels.prediction import ClipPrediction
from packsight.labels.prior import TransitionPrior, successor_contexts

FLOOR = 1e-6  # no probability is quite zero: one odd clip must not make a path impossible


@dataclass(frozen=True)
class ClipAnswer:
    """One clip of a video, in time order: its window [start_frame, end_frame) in the video and
    the model's answer (None when it gave none)."""

    clip_id: str
    start_frame: int
    end_frame: int
    prediction: ClipPrediction | None


@dataclass(frozen=True)
class TimelineSegment:
    operation: str
    start_frame: int  # in the video
    end_frame: int  # exclusive
    start_s: float
    end_s: float
    confidence: float  # the mean of its clips' probability for the operation
    clips: int

    def to_json(self) -> dict[str, object]:
        return {
            "operation": self.operation,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "confidence": self.confidence,
            "clips": self.clips,
        }


def smooth(
    clips: Sequence[ClipAnswer], prior: TransitionPrior, *, next_weight: float = 1.0
) -> list[ClipPrediction | None]:
    """The clips' answers with the prior applied: the most likely operation sequence, each
    clip's probability for its operation as confidence, and the next operation weighed against
    the prior's successors (`next_weight` on the model's own next-operation probabilities). A
    clip without an answer stays without one (and counts as no evidence)."""
    if not clips:
        return []
    evidence = [_evidence(c.prediction, prior) for c in clips]
    path = _viterbi(evidence, prior)
    operations = [prior.operations[state] for state in path]
    contexts = successor_contexts(operations, prior.background)
    smoothed: list[ClipPrediction | None] = []
    for t, (clip, probabilities) in enumerate(zip(clips, evidence, strict=True)):
        if clip.prediction is None:
            smoothed.append(None)
            continue
        operation = operations[t]
        following = prior.successors[contexts[t]]
        model_next = _fits(clip.prediction.next_probabilities, prior) or _one_hot(
            prior, clip.prediction.anticipated_next_operation, clip.prediction.confidence
        )
        scores = [
            math.log(max(p, FLOOR)) + next_weight * math.log(max(q, FLOOR))
            if prior.operations[j] != operation
            else -math.inf
            for j, (p, q) in enumerate(zip(following, model_next, strict=True))
        ]
        nxt = prior.operations[max(range(len(scores)), key=scores.__getitem__)]
        smoothed.append(
            replace(
                clip.prediction,
                dominant_operation=operation,
                anticipated_next_operation=nxt,
                confidence=round(probabilities[path[t]], 4),
            )
        )
    return smoothed


def timeline(
    clips: Sequence[ClipAnswer], answers: Sequence[ClipPrediction | None], fps: float
) -> list[TimelineSegment]:
    """Consecutive clips with the same operation as one segment; where the operation changes,
    the edge is where the earlier clip's in-clip segment ends (or the later one's starts) when
    it says so, else the clips' boundary. Clips without an answer leave a gap."""
    runs: list[tuple[str, int, int, list[float]]] = []
    previous: tuple[ClipAnswer, ClipPrediction] | None = None
    for clip, answer in zip(clips, answers, strict=True):
        if answer is None:
            previous = None
            continue
        edge = clip.start_frame
        if previous is not None and previous[1].dominant_operation != answer.dominant_operation:
            before, said = previous
            if before.start_frame + said.end_frame + 1 < before.end_frame:
                edge = before.start_frame + said.end_frame + 1
            elif answer.start_frame > 0:
                edge = clip.start_frame + answer.start_frame
        if runs and previous is not None and runs[-1][0] == answer.dominant_operation:
            op, start, _, confidences = runs[-1]
            runs[-1] = (op, start, clip.end_frame, [*confidences, answer.confidence])
        else:
            if runs and previous is not None:
                op, start, _, confidences = runs[-1]
                runs[-1] = (op, start, edge, confidences)
            runs.append((answer.dominant_operation, edge, clip.end_frame, [answer.confidence]))
        previous = (clip, answer)
    return [
        TimelineSegment(
            operation=op,
            start_frame=start,
            end_frame=end,
            start_s=round(start / fps, 3),
            end_s=round(end / fps, 3),
            confidence=round(sum(confidences) / len(confidences), 4),
            clips=len(confidences),
        )
        for op, start, end, confidences in runs
    ]


def _evidence(prediction: ClipPrediction | None, prior: TransitionPrior) -> list[float]:
    """The model's probability of each operation for a clip: the decoder's, else its answer's
    confidence spread as one-hot; uniform (no evidence) when it gave no answer."""
    n = len(prior.operations)
    if prediction is None:
        return [1.0 / n] * n
    return list(_fits(prediction.operation_probabilities, prior)) or _one_hot(
        prior, prediction.dominant_operation, prediction.confidence
    )


def _fits(probabilities: Sequence[float] | None, prior: TransitionPrior) -> Sequence[float]:
    """The probabilities if there is one per operation of the prior's taxonomy, else none (an
    answer stored before its taxonomy changed)."""
    return probabilities if probabilities and len(probabilities) == len(prior.operations) else ()


def _one_hot(prior: TransitionPrior, operation: str, confidence: float) -> list[float]:
    """The answer's confidence for its operation, the rest spread evenly over the others."""
    n = len(prior.operations)
    rest = (1 - confidence) / (n - 1) if n > 1 else 0.0
    return [confidence if op == operation else rest for op in prior.operations]


def _viterbi(evidence: Sequence[Sequence[float]], prior: TransitionPrior) -> list[int]:
    """The most likely operation (index) of every clip."""
    logs = np.log(np.maximum(np.asarray(evidence, dtype=np.float64), FLOOR))
    moves = np.log(np.maximum(np.asarray(prior.transitions, dtype=np.float64), FLOOR))
    best = np.log(np.maximum(np.asarray(prior.initial), FLOOR)) + logs[0]
    back = []
    for row in logs[1:]:
        scores = best[:, None] + moves  # [from, to]
        came = scores.argmax(axis=0)
        best = scores[came, np.arange(len(came))] + row
        back.append(came)
    state = int(best.argmax())
    path = [state]
    for came in reversed(back):
        state = int(came[state])
        path.append(state)
    return path[::-1]
