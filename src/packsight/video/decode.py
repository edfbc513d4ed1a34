"""Video decoding: probe, split into clip windows, plan the picks, read them with decord.

The two-pass path and the reference for `onepass.py`: one pass measures motion for the whole
video (`motion_signal`: the decoder's luma plane, `luma.py`, or for the first sampler every
frame scaled by decord); `decode_clips` then decodes only the chosen frames again at model
resolution, so a long video never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from packsight.video.luma import LumaDecodeError, luma_chunks
from packsight.video.reader import (
    VideoDecodeError,
    decoded,
    frame_rate,
    open_reader,
    read_batch,
    to_numpy,
)
from packsight.video.sampling import (
    SAMPLER,
    SAMPLERS,
    boundary_sigma,
    motion_magnitude_chunks,
    sample_motion_adaptive,
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Frames per get_batch in the motion pass: ~3.7 MB of RGB at 160x120, big enough to amortise calls.
MOTION_CHUNK_FRAMES = 64


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


@dataclass
class SampledClip:
    index: int
    start_frame: int  # [start, end) in the video
    end_frame: int
    frame_indices: tuple[int, ...]  # positions within the clip (0-based)
    frames: np.ndarray  # uint8 [n, h, w, 3] at model size

    @property
    def frame_count(self) -> int:
        """Length of the clip in video frames (not the number of sampled frames)."""
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class ClipPlan:
    """Which frames of one window to decode; the cheap, frame-free half of a SampledClip."""

    index: int
    start_frame: int
    end_frame: int
    frame_indices: tuple[int, ...]


def is_video_key(key: str) -> bool:
    return key.lower().endswith(VIDEO_EXTENSIONS)


def split_windows(
    frame_count: int, fps: float, clip_seconds: float = 5.0, min_tail_fraction: float = 0.5
) -> list[tuple[int, int]]:
    """Half-open [start, end) windows of round(clip_seconds * fps) frames covering every frame once.

    A tail shorter than min_tail_fraction of a window joins the previous window rather than
    becoming a clip too short to show an operation.
    """
    if frame_count < 1:
        raise ValueError(f"frame_count must be positive, got {frame_count}")
    if fps <= 0 or clip_seconds <= 0:
        raise ValueError(f"fps and clip_seconds must be positive, got {fps}, {clip_seconds}")
    if not 0 <= min_tail_fraction <= 1:
        raise ValueError(f"min_tail_fraction must be in [0, 1], got {min_tail_fraction}")
    size = max(1, round(clip_seconds * fps))
    windows = [(s, min(s + size, frame_count)) for s in range(0, frame_count, size)]
    if len(windows) > 1 and windows[-1][1] - windows[-1][0] < min_tail_fraction * size:
        windows.pop()
        windows[-1] = (windows[-1][0], frame_count)
    return windows


def model_frame_size(
    width: int, height: int, max_side: int = 336, factor: int = 28
) -> tuple[int, int]:
    """(w, h) keeping the aspect ratio, longer side <= max_side, both multiples of `factor`.

    Qwen2-VL merges 14-px patches 2x2, so sides must be multiples of 28. Small videos are scaled
    up too: every clip of one aspect then costs the same tokens and batches without padding.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if factor <= 0 or max_side < factor:
        raise ValueError(f"max_side ({max_side}) must be at least factor ({factor}) > 0")
    longest = (max_side // factor) * factor
    scale = longest / max(width, height)

    def fit(side: int) -> int:
        return min(longest, max(factor, round(side * scale / factor) * factor))

    return fit(width), fit(height)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame rate, frame count and native size; decodes only the first frame."""
    reader = open_reader(path)
    first = decoded(path, lambda: to_numpy(reader.next()), "the first frame")
    return VideoInfo(
        fps=frame_rate(path, reader),
        frame_count=len(reader),
        width=int(first.shape[1]),
        height=int(first.shape[0]),
    )


def plan_clips(
    path: str | os.PathLike[str],
    *,
    frames_per_clip: int = 8,
    clip_seconds: float = 5.0,
    motion_size: tuple[int, int] = (160, 120),
    boundaries: Sequence[int] | None = None,
    threads: int = 0,
    sampler: str = SAMPLER,
) -> tuple[VideoInfo, list[ClipPlan]]:
    """Probe, measure motion in one pass, and choose each window's frames. `threads`: the
    decoder's threads (0: its own choice, one per core); `sampler`: how motion is measured."""
    info = probe_video(path)
    motion = motion_signal(path, info, motion_size, threads, sampler)
    sigma = boundary_sigma(info.fps)
    plans = []
    for index, (start, end) in enumerate(split_windows(info.frame_count, info.fps, clip_seconds)):
        # The window's first frame gets motion 0: the same as recomputing from the window's own
        # frames, so a clip's picks do not depend on what came before it.
        window = motion[start:end].copy()
        window[0] = 0.0
        boundary = boundary_in(boundaries or (), start, end)
        picks = sample_motion_adaptive(
            window,
            frames_per_clip,
            boundary=None if boundary is None else boundary - start,
            sigma=sigma,
        )
        plans.append(ClipPlan(index, start, end, tuple(picks)))
    return info, plans


def decode_clips(
    path: str | os.PathLike[str],
    info: VideoInfo,
    plans: Sequence[ClipPlan],
    *,
    max_side: int = 336,
    threads: int = 0,
) -> Iterator[SampledClip]:
    """Decode each plan's frames at model resolution, one clip at a time (streaming friendly)."""
    width, height = model_frame_size(info.width, info.height, max_side)
    reader = open_reader(path, threads, width=width, height=height)
    for plan in plans:
        wanted = [plan.start_frame + i for i in plan.frame_indices]
        frames = decoded(
            path,
            partial(read_batch, reader, wanted),
            f"frames {wanted[0]}..{wanted[-1]} of clip {plan.index}",
        )
        yield SampledClip(plan.index, plan.start_frame, plan.end_frame, plan.frame_indices, frames)


def boundary_in(boundaries: Sequence[int], start: int, end: int) -> int | None:
    """The boundary inside [start, end) nearest the window's centre (a full view of both sides)."""
    inside = sorted(b for b in boundaries if start <= b < end)
    if not inside:
        return None
    centre = (start + end - 1) / 2
    return min(inside, key=lambda b: abs(b - centre))


def motion_signal(
    path: str | os.PathLike[str],
    info: VideoInfo,
    motion_size: tuple[int, int],
    threads: int = 0,
    sampler: str = SAMPLER,
) -> np.ndarray:
    """Every frame's motion, as `sampler` measures it on a `motion_size` grid."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; this version knows {', '.join(SAMPLERS)}")
    if sampler == SAMPLERS[0]:
        motion = _scaled_motion(path, motion_size, threads)
    else:
        try:
            motion = motion_magnitude_chunks(luma_chunks(path, motion_size, threads))
        except LumaDecodeError as exc:
            reason = f"decoding frames failed after frame {exc.frames} (FFmpeg: {exc.reason})"
            raise VideoDecodeError(path, reason) from exc
    if len(motion) != info.frame_count:
        reason = f"decoding frames gave {len(motion)} of {info.frame_count}; truncated or corrupt?"
        raise VideoDecodeError(path, reason)
    return motion


def _scaled_motion(
    path: str | os.PathLike[str], motion_size: tuple[int, int], threads: int = 0
) -> np.ndarray:
    """The first sampler's motion: every frame scaled to `motion_size` RGB by decord, to gray."""
    reader = open_reader(path, threads, width=motion_size[0], height=motion_size[1])
    total = len(reader)

    def gray_chunks() -> Iterator[np.ndarray]:
        for start in range(0, total, MOTION_CHUNK_FRAMES):
            indices = list(range(start, min(start + MOTION_CHUNK_FRAMES, total)))
            rgb = decoded(
                path,
                partial(read_batch, reader, indices),
                f"frames {indices[0]}..{indices[-1]} of {total}",
            )
            yield to_gray(rgb)

    return motion_magnitude_chunks(gray_chunks())


def to_gray(rgb: np.ndarray) -> np.ndarray:
    # Integer BT.601 luma (77, 150, 29)/256: exact enough for motion and ~3x faster than float.
    wide = rgb.astype(np.uint16)
    luma = wide[..., 0] * 77 + wide[..., 1] * 150 + wide[..., 2] * 29
    return (luma >> 8).astype(np.uint8)
