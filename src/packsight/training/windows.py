"""Which clips to train and test on, and their ground truth, from a video's operation segments.

Segments are (operation, start_frame, end_frame) with an exclusive end, as in the annotations and
`SyntheticVideo.segments`. Truths use clip-relative frames with an inclusive end, like predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import Taxonomy

Segment = tuple[str, int, int]
Split = Literal["train", "validation", "test"]
TRAIN_SUBJECTS = ("U0101", "U0102", "U0103", "U0104", "U0105", "U0106")


@dataclass(frozen=True)
class TrainingWindow:
    """A clip [start_frame, end_frame) of a video; `boundary` is clip-relative, if one is known."""

    start_frame: int
    end_frame: int
    boundary: int | None


def truth_for_window(
    segments: Sequence[Segment],
    window: tuple[int, int],
    procedure_next: Callable[[str], str | None] | None = None,
    *,
    taxonomy: Taxonomy,
    clip_id: str = "",
) -> ClipTruth:
    """The ground truth of the clip [start, end) of a video annotated with `segments`.

    The dominant operation covers most of the window's frames (ties: the earlier one); its segment
    is its longest contiguous run in the window. The next operation is the first one after that
    run that differs from the dominant and is not background: a pause (Idle/Null) is not a step
    of the procedure, and "Tape, Idle, Label" should teach "Label" after Tape. Frames no segment
    covers count as background, as in OpenPack. When the video has no such later operation,
    `procedure_next(dominant)` is asked (for instance `procedure_successor(taxonomy)`), and the
    taxonomy's `unknown` is the answer when that is absent or returns None.
    """
    start, end = window
    if not 0 <= start < end:
        raise ValueError(f"window {window} must be [start, end) with 0 <= start < end")
    runs = _normalised(segments, taxonomy.background, until=end)
    overlaps = [
        (i, op, max(s, start), min(e, end))
        for i, (op, s, e) in enumerate(runs)
        if s < end and e > start
    ]
    totals: dict[str, int] = {}
    for _, op, s, e in overlaps:
        totals[op] = totals.get(op, 0) + e - s
    # max keeps the first of equals, and dicts keep insertion order: ties go to the earlier one.
    dominant = max(totals, key=lambda op: totals[op])
    index, _, run_start, run_end = max(
        (o for o in overlaps if o[1] == dominant), key=lambda o: o[3] - o[2]
    )
    following = next(
        (op for op, _, _ in runs[index + 1 :] if op not in (dominant, taxonomy.background)), None
    )
    if following is None and procedure_next is not None:
        following = procedure_next(dominant)
    return ClipTruth(
        clip_id=clip_id,
        dominant_operation=dominant,
        start_frame=run_start - start,
        end_frame=run_end - 1 - start,
        next_operation=following if following is not None else taxonomy.unknown,
    )


def procedure_successor(taxonomy: Taxonomy) -> Callable[[str], str | None]:
    """The taxonomy's procedure as a `procedure_next`: the step after an operation, cyclically
    (Final Check is followed by the next box's Box Setup); None for operations outside it."""
    steps = taxonomy.procedure

    def successor(operation: str) -> str | None:
        if operation not in steps:
            return None
        return steps[(steps.index(operation) + 1) % len(steps)]

    return successor


def select_training_windows(
    segments: Sequence[Segment],
    *,
    frame_count: int,
    fps: float,
    clip_seconds: float = 5.0,
    boundary_jitter_s: float = 0.5,
    seed: int = 42,
    mid_per_segment: int = 1,
) -> list[TrainingWindow]:
    """Training clips of one video: one around every operation change, plus mid-operation ones.

    Each boundary gets a window whose centre lies a random whole number of frames within
    ±`boundary_jitter_s` of it (so the change is not always at the same place in the clip, and the
    model cannot learn "the change is in the middle"). Every segment at least a clip long also gets
    `mid_per_segment` evenly spread windows inside it, so the model sees steady operations too;
    shorter segments are already seen whole by their boundary windows. Windows are clamped inside
    the video (a video shorter than a clip gives the whole video), duplicates are merged keeping
    the boundary nearest the centre, and the result is sorted. Deterministic for a seed.
    """
    if frame_count < 1 or fps <= 0 or clip_seconds <= 0 or boundary_jitter_s < 0:
        raise ValueError(
            "need frame_count >= 1, fps > 0, clip_seconds > 0 and boundary_jitter_s >= 0, got "
            f"{frame_count}, {fps}, {clip_seconds}, {boundary_jitter_s}"
        )
    if mid_per_segment < 0:
        raise ValueError(f"mid_per_segment must be non-negative, got {mid_per_segment}")
    size = min(max(1, round(clip_seconds * fps)), frame_count)
    jitter = int(np.floor(boundary_jitter_s * fps + 1e-9))
    if 2 * jitter >= max(1, round(clip_seconds * fps)):
        raise ValueError(
            f"a ±{boundary_jitter_s} s jitter does not keep the boundary inside a "
            f"{clip_seconds} s clip"
        )
    # Unannotated gaps become runs of their own (""), so both of their edges are boundaries.
    runs = _normalised(segments, background="")
    rng = np.random.default_rng(seed)
    candidates: list[TrainingWindow] = []
    for _, boundary, _ in runs[1:]:
        if boundary >= frame_count:
            break
        centre = boundary + int(rng.integers(-jitter, jitter, endpoint=True))
        first = min(max(centre - size // 2, 0), frame_count - size)
        candidates.append(TrainingWindow(first, first + size, boundary - first))
    for _, seg_start, seg_end in runs:
        seg_end = min(seg_end, frame_count)
        if seg_end - seg_start < size:
            continue
        slack = seg_end - seg_start - size
        for k in range(mid_per_segment):
            first = seg_start + round((k + 1) * slack / (mid_per_segment + 1))
            candidates.append(TrainingWindow(first, first + size, None))
    return _deduplicated(candidates)


def _deduplicated(windows: Iterable[TrainingWindow]) -> list[TrainingWindow]:
    best: dict[tuple[int, int], TrainingWindow] = {}
    for window in windows:
        key = (window.start_frame, window.end_frame)
        if key not in best or _centrality(window) < _centrality(best[key]):
            best[key] = window
    return [best[key] for key in sorted(best)]


def _centrality(window: TrainingWindow) -> float:
    # A boundary near the centre shows both operations; a window without one ranks last.
    if window.boundary is None:
        return float("inf")
    return abs(window.boundary - (window.end_frame - window.start_frame - 1) / 2)


def _normalised(segments: Sequence[Segment], background: str, until: int = 0) -> list[Segment]:
    """Sorted segments with gaps (and frames up to `until`) filled with `background`, and
    neighbours of the same operation merged: they are one run for the model."""
    pieces: list[Segment] = []
    covered = 0
    for op, start, end in sorted(segments, key=lambda seg: seg[1]):
        if start >= end or start < 0:
            raise ValueError(f"segment ({op!r}, {start}, {end}) is empty or negative")
        if start < covered:
            raise ValueError(f"segment ({op!r}, {start}, {end}) overlaps one ending at {covered}")
        if start > covered:
            pieces.append((background, covered, start))
        pieces.append((op, start, end))
        covered = end
    if not pieces:
        raise ValueError("a video needs at least one operation segment")
    if until > covered:
        pieces.append((background, covered, until))
    runs = [pieces[0]]
    for op, start, end in pieces[1:]:
        if op == runs[-1][0]:
            runs[-1] = (op, runs[-1][1], end)
        else:
            runs.append((op, start, end))
    return runs


def split_for_subject(
    subject: str,
    *,
    train: Sequence[str] = TRAIN_SUBJECTS,
    validation: Sequence[str] = ("U0107",),
    test: Sequence[str] = ("U0108",),
) -> Split | None:
    """The split a subject (worker id, e.g. "U0103") belongs to, or None if it is in none."""
    splits: dict[Split, Sequence[str]] = {"train": train, "validation": validation, "test": test}
    # A bare string ("U0107") would otherwise match by substring ("U01" in "U0107").
    member_of = [
        name
        for name, subjects in splits.items()
        if subject in ((subjects,) if isinstance(subjects, str) else subjects)
    ]
    if len(member_of) > 1:
        # A subject in two splits leaks its clips into the test score: refuse the configuration.
        raise ValueError(f"subject {subject!r} is in several splits: {', '.join(member_of)}")
    return member_of[0] if member_of else None
