"""Examples from an annotated video: the model's input and the answer it should give.

Training examples are clips around operation boundaries (one low-resolution motion pass per
video, then per window the motion-adaptive picks with the boundary weighted in, and only the
picked frames decoded at model size). Evaluation examples are exactly what labelling produces:
the fixed windows of `plan_clips`, sampled by the same code with no boundary, so nothing of the
labels reaches the frames; the labels only give each window its truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import Taxonomy
from packsight.training.windows import Segment, select_training_windows, truth_for_window
from packsight.video.decode import (
    ClipPlan,
    VideoInfo,
    decode_clips,
    motion_signal,
    plan_clips,
    probe_video,
    split_windows,
)
from packsight.video.identity import clip_id
from packsight.video.sampling import FrameSettings, boundary_sigma, sample_motion_adaptive


@dataclass
class TrainingExample:
    """One clip to train or evaluate on: the model's input and the answer it should give."""

    clip_id: str
    subject: str
    frames: np.ndarray  # uint8 [n, h, w, 3] at model size
    clip_frame_count: int  # frames in the window (not the sampled count)
    frame_indices: tuple[int, ...]  # positions of the sampled frames within the window
    truth: ClipTruth
    fps: float = 25.0  # Qwen2.5-VL places frames in time with it
    video: str = ""  # bucket/key: which clips are one video's, for a whole-video timeline
    start_frame: int = 0  # the window's first frame in the video


def production_examples(
    path: str | os.PathLike[str],
    segments: Sequence[Segment],
    *,
    prefix: str,
    subject: str,
    taxonomy: Taxonomy,
    frames: FrameSettings,
    procedure_next: Callable[[str], str | None] | None = None,
    limit: int | None = None,
    video: str = "",
) -> list[TrainingExample]:
    """The clips `packsight label` makes of the video (its first `limit` ones, if given; only
    those are decoded), each with its truth from `segments`."""
    info, plans = plan_clips(
        path,
        frames_per_clip=frames.frames_per_clip,
        clip_seconds=frames.clip_seconds,
        motion_size=frames.motion_size,
        sampler=frames.sampler,
    )
    plans = plans[:limit] if limit is not None else plans
    ids = [clip_id(prefix, plan.start_frame, info.fps) for plan in plans]
    examples = _examples(
        path, info, plans, ids, segments, subject, taxonomy, frames, procedure_next
    )
    return [replace(e, video=video) for e in examples]


def window_truths(
    path: str | os.PathLike[str],
    segments: Sequence[Segment],
    *,
    taxonomy: Taxonomy,
    clip_seconds: float,
    procedure_next: Callable[[str], str | None] | None = None,
) -> tuple[list[ClipTruth], list[tuple[str, float]]]:
    """The truth of every window labelling cuts from the video, in time order, and its segments
    as (operation, seconds): what a transition prior learns from. Reads the header only."""
    info = probe_video(path)
    return truths_of_windows(
        segments,
        frame_count=info.frame_count,
        fps=info.fps,
        taxonomy=taxonomy,
        clip_seconds=clip_seconds,
        procedure_next=procedure_next,
    )


def truths_of_windows(
    segments: Sequence[Segment],
    *,
    frame_count: int,
    fps: float,
    taxonomy: Taxonomy,
    clip_seconds: float,
    procedure_next: Callable[[str], str | None] | None = None,
) -> tuple[list[ClipTruth], list[tuple[str, float]]]:
    """`window_truths` of a video of `frame_count` frames at `fps` (known without its file)."""
    truths = [
        truth_for_window(segments, window, procedure_next, taxonomy=taxonomy)
        for window in split_windows(frame_count, fps, clip_seconds)
    ]
    return truths, [(op, (end - start) / fps) for op, start, end in segments]


def examples_for_video(
    path: str | os.PathLike[str],
    segments: Sequence[Segment],
    *,
    prefix: str,
    subject: str,
    taxonomy: Taxonomy,
    frames: FrameSettings,
    seed: int = 42,
    procedure_next: Callable[[str], str | None] | None = None,
) -> list[TrainingExample]:
    """The training examples of one annotated video, in window order.

    Clip ids are `<prefix>_t<start second>` like the labeler's, with `_2`, `_3`, ... appended
    when several windows start within the same second (boundary windows can), so ids stay
    unique.
    """
    info = probe_video(path)
    motion = motion_signal(path, info, frames.motion_size, sampler=frames.sampler)
    windows = select_training_windows(
        segments,
        frame_count=info.frame_count,
        fps=info.fps,
        clip_seconds=frames.clip_seconds,
        seed=seed,
    )
    sigma = boundary_sigma(info.fps)
    plans = []
    for index, window in enumerate(windows):
        # As in plan_clips: the window's first frame has no predecessor inside the clip, so its
        # motion is 0 and a clip's picks do not depend on the frames before it.
        local = motion[window.start_frame : window.end_frame].copy()
        local[0] = 0.0
        picks = sample_motion_adaptive(
            local, frames.frames_per_clip, boundary=window.boundary, sigma=sigma
        )
        plans.append(ClipPlan(index, window.start_frame, window.end_frame, tuple(picks)))
    ids = unique_ids([clip_id(prefix, w.start_frame, info.fps) for w in windows])
    return _examples(path, info, plans, ids, segments, subject, taxonomy, frames, procedure_next)


def _examples(
    path: str | os.PathLike[str],
    info: VideoInfo,
    plans: Sequence[ClipPlan],
    ids: Sequence[str],
    segments: Sequence[Segment],
    subject: str,
    taxonomy: Taxonomy,
    frames: FrameSettings,
    procedure_next: Callable[[str], str | None] | None,
) -> list[TrainingExample]:
    """Decode the planned clips (one at a time) and give each its truth from `segments`."""
    examples = []
    clips = decode_clips(path, info, plans, max_side=frames.max_side)
    for clip, name in zip(clips, ids, strict=True):
        window = (clip.start_frame, clip.end_frame)
        truth = truth_for_window(segments, window, procedure_next, taxonomy=taxonomy, clip_id=name)
        examples.append(
            TrainingExample(
                clip_id=name,
                subject=subject,
                frames=clip.frames,
                clip_frame_count=clip.frame_count,
                frame_indices=clip.frame_indices,
                truth=truth,
                fps=info.fps,
                start_frame=clip.start_frame,
            )
        )
    return examples


def unique_ids(ids: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in ids:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique
