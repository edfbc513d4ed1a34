"""A transition prior for people: its window-to-window matrix, the most likely next operation
after each one, and how long operations last, as text lines or one JSON document. Pure: a
prior in, text out (packsight.labels.prior_plot draws the matrix)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packsight.labels.prior import START, TransitionPrior


@dataclass(frozen=True)
class Successor:
    context: str  # an operation, or START (a video's first windows)
    operation: str | None  # the most likely next operation; None for a context never seen
    probability: float
    seen: int | None  # windows it was learned from; None for a prior stored without counts


def successors(prior: TransitionPrior) -> list[Successor]:
    """The most likely next operation of the procedure after each context, in the taxonomy's
    order, START first."""
    rows = []
    for context in successor_contexts(prior):
        row = prior.successors[context]
        seen = prior.successors_seen.get(context) if prior.successors_seen else None
        best = max(range(len(row)), key=row.__getitem__)
        operation = None if seen == 0 else prior.operations[best]
        rows.append(Successor(context, operation, row[best], seen))
    return rows


def successor_contexts(prior: TransitionPrior) -> list[str]:
    """The contexts a next operation is predicted from: START, then every operation but the
    background (a pause takes the context of the operation before it)."""
    return [
        c for c in (START, *prior.operations) if c != prior.background and c in prior.successors
    ]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def learned_from(prior: TransitionPrior) -> str:
    return f"{plural(prior.videos, 'video')}, {plural(prior.windows, 'window')}"


def transitions_total(prior: TransitionPrior) -> int:
    """Window pairs the prior was learned from (each video's windows, one after the other)."""
    if prior.transitions_seen:
        return sum(prior.transitions_seen)
    return max(0, prior.windows - prior.videos)


def prior_document(prior: TransitionPrior) -> dict[str, Any]:
    """The prior as stored, with what it says at a glance: the most likely next operations."""
    return {
        **prior.to_json(),
        "window_transitions": transitions_total(prior),
        "most_likely_next": {
            s.context: {"operation": s.operation, "probability": round(s.probability, 4)}
            for s in successors(prior)
        },
    }


def prior_lines(prior: TransitionPrior) -> list[str]:
    """The prior as a table: counts, the transition matrix (numbered columns, one row per
    operation, each row summing to 1), the most likely successors and the durations."""
    ops = prior.operations
    width = max(len(op) for op in (*ops, "(start)"))
    lines = [
        f"taxonomy {prior.taxonomy}: learned from {learned_from(prior)}, "
        f"{plural(transitions_total(prior), 'window transition')}",
        "",
        "window to next window (row: this window's operation, column: the next's; rows sum to 1)",
        f"{'':>{width + 4}}" + "".join(f"{j:>6}" for j in range(1, len(ops) + 1)) + "    seen",
    ]
    for i, (op, row) in enumerate(zip(ops, prior.transitions, strict=True)):
        seen = str(prior.transitions_seen[i]) if prior.transitions_seen else "-"
        cells = "".join(f"{p:>6.2f}" for p in row)
        lines.append(f"{i + 1:>2}  {op:<{width}}{cells}{seen:>8}")
    lines += ["", "most likely next operation (of the procedure, pauses skipped)"]
    for s in successors(prior):
        context = "(start)" if s.context == START else s.context
        seen = "-" if s.seen is None else str(s.seen)
        if s.operation is None:
            lines.append(f"  {context:<{width}}  -> {'(never seen)':<{width}}        seen 0")
        else:
            lines.append(
                f"  {context:<{width}}  -> {s.operation:<{width}}  {s.probability:.2f}  seen {seen}"
            )
    lines += [
        "",
        "durations of an operation's segments (seconds)",
        f"  {'':<{width}}  {'mean':>8}{'std':>8}{'segments':>10}",
    ]
    for op in ops:
        d = prior.durations.get(op)
        if d is not None:
            lines.append(f"  {op:<{width}}  {d.mean_s:>8.1f}{d.std_s:>8.1f}{d.segments:>10}")
    if not prior.durations:
        lines.append("  (none stored)")
    return lines
