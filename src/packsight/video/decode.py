"""Video decoding with decord: probe, split into clip windows, sample frames at model resolution.

One cheap low-resolution pass measures motion for the whole video; only the chosen frames are then
decoded at model resolution, so a long video never sits in memory.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import decord
import numpy as np

from packsight.video.sampling import boundary_sigma, motion_magnitude_chunks, sample_motion_adaptive

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Frames per get_batch in the motion pass: ~3.7 MB of RGB at 160x120, big enough to amortise calls.
MOTION_CHUNK_FRAMES = 64


class VideoDecodeError(Exception):
    """A video cannot be read: empty, truncated, corrupt, not a video, or without frames."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot decode {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


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
    reader = _open_reader(path)
    first = _decode(path, lambda: _to_numpy(reader.next()), "the first frame")
    return VideoInfo(
        fps=_fps(path, reader),
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
) -> tuple[VideoInfo, list[ClipPlan]]:
    """Probe, measure motion in one low-res pass, and choose each window's frames. `threads`:
    the decoder's threads (0: its own choice, one per core)."""
    info = probe_video(path)
    motion = _motion_signal(path, motion_size, threads)
    if len(motion) != info.frame_count:
        raise VideoDecodeError(path, f"decoded {len(motion)} of {info.frame_count} frames")
    sigma = boundary_sigma(info.fps)
    plans = []
    for index, (start, end) in enumerate(split_windows(info.frame_count, info.fps, clip_seconds)):
        # The window's first frame gets motion 0: the same as recomputing from the window's own
        # frames, so a clip's picks do not depend on what came before it.
        window = motion[start:end].copy()
        window[0] = 0.0
        boundary = _boundary_in(boundaries or (), start, end)
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
    reader = _open_reader(path, threads, width=width, height=height)
    for plan in plans:
        wanted = [plan.start_frame + i for i in plan.frame_indices]
        frames = _decode(
            path,
            partial(_read_batch, reader, wanted),
            f"frames {wanted[0]}..{wanted[-1]} of clip {plan.index}",
        )
        yield SampledClip(plan.index, plan.start_frame, plan.end_frame, plan.frame_indices, frames)


def sample_video(
    path: str | os.PathLike[str],
    *,
    frames_per_clip: int = 8,
    clip_seconds: float = 5.0,
    max_side: int = 336,
    motion_size: tuple[int, int] = (160, 120),
    boundaries: Sequence[int] | None = None,
) -> tuple[VideoInfo, list[SampledClip]]:
    """Split a video into clip windows and return each window's motion-sampled frames."""
    info, plans = plan_clips(
        path,
        frames_per_clip=frames_per_clip,
        clip_seconds=clip_seconds,
        motion_size=motion_size,
        boundaries=boundaries,
    )
    return info, list(decode_clips(path, info, plans, max_side=max_side))


def _boundary_in(boundaries: Sequence[int], start: int, end: int) -> int | None:
    """The boundary inside [start, end) nearest the window's centre (a full view of both sides)."""
    inside = sorted(b for b in boundaries if start <= b < end)
    if not inside:
        return None
    centre = (start + end - 1) / 2
    return min(inside, key=lambda b: abs(b - centre))


def _motion_signal(
    path: str | os.PathLike[str], motion_size: tuple[int, int], threads: int = 0
) -> np.ndarray:
    reader = _open_reader(path, threads, width=motion_size[0], height=motion_size[1])
    total = len(reader)

    def gray_chunks() -> Iterator[np.ndarray]:
        for start in range(0, total, MOTION_CHUNK_FRAMES):
            indices = list(range(start, min(start + MOTION_CHUNK_FRAMES, total)))
            rgb = _decode(
                path,
                partial(_read_batch, reader, indices),
                f"frames {indices[0]}..{indices[-1]} of {total}",
            )
            yield _to_gray(rgb)

    return motion_magnitude_chunks(gray_chunks())


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    # Integer BT.601 luma (77, 150, 29)/256: exact enough for motion and ~3x faster than float.
    wide = rgb.astype(np.uint16)
    luma = wide[..., 0] * 77 + wide[..., 1] * 150 + wide[..., 2] * 29
    return (luma >> 8).astype(np.uint8)


def _read_batch(reader: decord.VideoReader, indices: list[int]) -> np.ndarray:
    return _to_numpy(reader.get_batch(indices))


def _to_numpy(batch: object) -> np.ndarray:
    # decord's output type follows a process-wide "bridge" another module may have switched.
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):
        return batch.numpy()
    return np.asarray(batch)


def _fps(path: str | os.PathLike[str], reader: decord.VideoReader) -> float:
    fps = float(reader.get_avg_fps())
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(path, f"no usable frame rate (container says {fps})")
    return fps


def _open_reader(path: str | os.PathLike[str], threads: int = 0, **size: int) -> decord.VideoReader:
    file = Path(path)
    if not file.exists():
        raise VideoDecodeError(path, "file not found")
    if not file.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if file.stat().st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        return decord.VideoReader(str(file), num_threads=threads, **size)
    except AssertionError as exc:  # decord asserts on a container that reports 0 frames
        raise VideoDecodeError(path, "the video has no frames") from exc
    except (RuntimeError, decord.DECORDError) as exc:
        reason = _decord_reason(exc)
        if reason.startswith("Error reading "):  # decord's only words when FFmpeg cannot open it
            reason = "FFmpeg cannot open the container: not a video, or damaged/truncated"
        raise VideoDecodeError(path, f"not a readable video (decord: {reason})") from exc


def _decode(path: str | os.PathLike[str], read: Callable[[], np.ndarray], what: str) -> np.ndarray:
    try:
        return read()
    except (RuntimeError, decord.DECORDError, StopIteration) as exc:
        reason = f"decoding {what} failed; truncated or corrupt? (decord: {_decord_reason(exc)})"
        raise VideoDecodeError(path, reason) from exc


def _decord_reason(exc: BaseException) -> str:
    """decord's C++ message in a user's words: no '[12:00:00] /src/x.cc:83:' prefix, no asserts."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(exc))
    text = " ".join(text.split())
    if "av_read_frame failed with 1094995529" in text:  # AVERROR_INVALIDDATA while indexing
        text = "invalid data where packets were expected; the file ends early or is damaged"
    elif failed_check := re.search(r"Check failed: .* \(-?\d+ vs\. -?\d+\) (.+)$", text):
        text = failed_check.group(1)  # the C++ assertion text means nothing to a user
        if text == "Cannot create buffer source":  # the stream's pixel format is unknown
            text = "no decodable video stream (pixel format unknown)"
    text = text or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
