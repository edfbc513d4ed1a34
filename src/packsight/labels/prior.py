"""What verified labels teach about the order of a packing procedure: a transition prior.

Learned from the ground truth of the windows labelling cuts (5-s clips, in time order, per video):

- `transitions[i][j]`: how likely the window after one of operation i shows operation j (the
  diagonal holds how long operations last, in windows);
- `successors[c][j]`: how likely j is the next operation of the procedure (the truth's
  `next_operation`) given the context c: the window's operation, or for a background window
  (a pause) the last operation before it, or "start" when nothing came before;
- `initial[j]`: how likely a video's first window shows j;
- `durations`: per operation, the mean and spread of its segments' length in seconds;
- `transitions_seen[i]` and `successors_seen[c]`: how many windows the row was learned from (a
  row seen never is the pseudo-counts alone; priors stored before these counts have none).

Every row of counts gets one pseudo-count spread evenly over its operations (a symmetric
Dirichlet prior of total weight one): a pair never seen in training stays possible, and a few
hundred windows are not drowned by the pseudo-counts (one per cell would outweigh them).
Nothing here looks at frames or models; packsight.labels.timeline uses the prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import Taxonomy

START = "start"  # the successor context of a video's first operations


@dataclass(frozen=True)
class Duration:
    mean_s: float
    std_s: float
    segments: int


@dataclass(frozen=True)
class TransitionPrior:
    taxonomy: str
    operations: tuple[str, ...]  # the taxonomy's, in its order: indices of every row below
    background: str
    initial: tuple[float, ...]
    transitions: tuple[tuple[float, ...], ...]
    successors: dict[str, tuple[float, ...]]  # context (an operation or START) -> next op
    durations: dict[str, Duration]
    videos: int
    windows: int
    transitions_seen: tuple[int, ...] = ()  # window pairs seen out of each operation
    successors_seen: dict[str, int] = field(default_factory=dict)  # windows seen per context

    def index(self, operation: str) -> int:
        return self.operations.index(operation)

    def to_json(self) -> dict[str, Any]:
        return {
            "taxonomy": self.taxonomy,
            "operations": list(self.operations),
            "background": self.background,
            "initial": list(self.initial),
            "transitions": [list(row) for row in self.transitions],
            "successors": {context: list(row) for context, row in self.successors.items()},
            "durations": {
                op: {"mean_s": d.mean_s, "std_s": d.std_s, "segments": d.segments}
                for op, d in self.durations.items()
            },
            "videos": self.videos,
            "windows": self.windows,
            "transitions_seen": list(self.transitions_seen),
            "successors_seen": dict(self.successors_seen),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransitionPrior:
        return cls(
            taxonomy=data["taxonomy"],
            operations=tuple(data["operations"]),
            background=data["background"],
            initial=tuple(data["initial"]),
            transitions=tuple(tuple(row) for row in data["transitions"]),
            successors={context: tuple(row) for context, row in data["successors"].items()},
            durations={op: Duration(**d) for op, d in data["durations"].items()},
            videos=data["videos"],
            windows=data["windows"],
            transitions_seen=tuple(data.get("transitions_seen", ())),
            successors_seen=dict(data.get("successors_seen", {})),
        )


def successor_contexts(operations: Sequence[str], background: str) -> list[str]:
    """For each window of a video (its operations in time order), the context its next
    operation is predicted from: its operation, or for a pause the last operation before it
    (START when there is none). One pass, however long the video."""
    contexts, last = [], START
    for operation in operations:
        if operation != background:
            last = operation
        contexts.append(last)
    return contexts


def learn_prior(
    videos: Sequence[Sequence[ClipTruth]],
    taxonomy: Taxonomy,
    *,
    segment_seconds: Sequence[Sequence[tuple[str, float]]] = (),
    alpha: float | None = None,
) -> TransitionPrior:
    """The prior of `videos`, each the truths of its windows in time order; `segment_seconds`
    gives, per video, its segments as (operation, length in seconds) for the durations; `alpha`
    is the pseudo-count per cell (default: 1 / number of operations)."""
    operations = tuple(taxonomy.operations)
    n = len(operations)
    alpha = 1 / n if alpha is None else alpha
    position = {op: i for i, op in enumerate(operations)}
    initial = [alpha] * n
    transitions = [[alpha] * n for _ in range(n)]
    contexts = [*operations, START]
    successors = {context: [alpha] * n for context in contexts}
    transitions_seen = [0] * n
    successors_seen = dict.fromkeys(contexts, 0)
    windows = 0
    for truths in videos:
        ops = [t.dominant_operation for t in truths]
        if not ops:
            continue
        windows += len(ops)
        initial[position[ops[0]]] += 1
        for here, after in pairwise(ops):
            transitions[position[here]][position[after]] += 1
            transitions_seen[position[here]] += 1
        contexts = successor_contexts(ops, taxonomy.background)
        for truth, context in zip(truths, contexts, strict=True):
            if truth.next_operation in position:
                successors[context][position[truth.next_operation]] += 1
                successors_seen[context] += 1
    lengths: dict[str, list[float]] = {}
    for segments in segment_seconds:
        for op, seconds in segments:
            lengths.setdefault(op, []).append(seconds)
    return TransitionPrior(
        taxonomy=taxonomy.name,
        operations=operations,
        background=taxonomy.background,
        initial=_normalised(initial),
        transitions=tuple(_normalised(row) for row in transitions),
        successors={context: _normalised(row) for context, row in successors.items()},
        durations={op: _duration(values) for op, values in sorted(lengths.items())},
        videos=sum(1 for truths in videos if truths),
        windows=windows,
        transitions_seen=tuple(transitions_seen),
        successors_seen=successors_seen,
    )


def _normalised(counts: Sequence[float]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(c / total for c in counts)


def _duration(values: Sequence[float]) -> Duration:
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return Duration(mean_s=round(mean, 3), std_s=round(spread, 3), segments=len(values))
