"""Motion-magnitude adaptive frame sampling (ARCHITECTURE.md, Section 2).

Pure numpy: the video module feeds it a per-frame motion signal and gets back the frames to decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# 0.5 s at 25 fps: the assignment samples training clips within ±0.5 s of an operation boundary.
DEFAULT_SIGMA_FRAMES = 12.5
BOUNDARY_SIGMA_SECONDS = 0.5


def boundary_sigma(fps: float, seconds: float = BOUNDARY_SIGMA_SECONDS) -> float:
    """The gaussian width, in frames, for a boundary weight of `seconds` at `fps`."""
    if fps <= 0 or seconds <= 0:
        raise ValueError(f"fps and seconds must be positive, got fps={fps}, seconds={seconds}")
    return fps * seconds


def motion_magnitude(gray: np.ndarray) -> np.ndarray:
    """Per-frame motion of a [T, H, W] gray stack: motion[0] = 0, then mean |frame difference|."""
    gray = np.asarray(gray)
    if gray.ndim != 3:
        raise ValueError(f"gray must be [T, H, W], got shape {gray.shape}")
    motion = np.zeros(gray.shape[0], dtype=np.float64)
    if gray.shape[0] > 1:
        motion[1:] = _frame_differences(gray, previous=None)
    return motion


def motion_magnitude_chunks(chunks: Iterable[np.ndarray]) -> np.ndarray:
    """motion_magnitude over consecutive [t, H, W] chunks of one video, keeping only the last frame.

    Equal to motion_magnitude of the concatenated stack, but memory stays at one chunk: a one-hour
    video at 160x120 would be ~1.7 GB of gray frames.
    """
    parts: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if chunk.ndim != 3:
            raise ValueError(f"each chunk must be [t, H, W], got shape {chunk.shape}")
        if len(chunk) == 0:
            continue
        if previous is None:
            parts.append(np.zeros(1))
            if len(chunk) > 1:
                parts.append(_frame_differences(chunk, previous=None))
        else:
            parts.append(_frame_differences(chunk, previous=previous))
        previous = chunk[-1]
    return np.concatenate(parts) if parts else np.zeros(0)


def _frame_differences(chunk: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """mean |chunk[t] - chunk[t-1]| for each t (starting from `previous` when given)."""
    # A signed, wider dtype: uint8 subtraction would wrap around (3 - 5 = 254).
    wide = np.float32 if np.issubdtype(chunk.dtype, np.floating) else np.int16
    frames = chunk.astype(wide, copy=False)
    if previous is not None:
        if previous.shape != chunk.shape[1:]:
            raise ValueError(f"frame shape changed from {previous.shape} to {chunk.shape[1:]}")
        frames = np.concatenate([previous[None].astype(wide), frames])
    diff = np.abs(np.diff(frames, axis=0))
    return diff.reshape(len(diff), -1).mean(axis=1, dtype=np.float64)


def sample_motion_adaptive(
    motion: np.ndarray,
    n_frames: int = 8,
    *,
    boundary: int | None = None,
    sigma: float | None = None,
    boundary_weight: float = 1.0,
) -> list[int]:
    """Pick `n_frames` sorted frame indices of a clip from its motion signal.

    Frames 0, T-1 and the boundary (when known) are always picked; the rest are the highest scores,
    where score = motion / max(motion) + boundary_weight * gaussian(t - boundary, sigma). Ties go
    to the lower index so the choice is deterministic. A clip shorter than `n_frames` gets evenly
    spread indices with repeats, so the model always sees `n_frames` frames.
    """
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim != 1 or len(motion) == 0:
        raise ValueError(f"motion must be a non-empty 1-D signal, got shape {motion.shape}")
    if not np.all(np.isfinite(motion)) or np.any(motion < 0):
        raise ValueError("motion must be finite and non-negative")
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2 (first and last frame), got {n_frames}")
    length = len(motion)
    if boundary is not None and not 0 <= boundary <= length - 1:
        raise ValueError(f"boundary {boundary} is outside the clip's frames [0, {length - 1}]")
    sigma = DEFAULT_SIGMA_FRAMES if sigma is None else sigma
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")

    if length <= n_frames:
        return [int(i) for i in np.linspace(0, length - 1, n_frames).round()]

    peak = motion.max()
    score = motion / peak if peak > 0 else np.zeros(length)
    if boundary is not None:
        t = np.arange(length)
        score = score + boundary_weight * np.exp(-0.5 * ((t - boundary) / sigma) ** 2)

    # With n_frames == 2 and a boundary there is no room for all three; the clip's ends win because
    # they anchor the temporal segment the model must report.
    mandatory = [0, length - 1] + ([boundary] if boundary is not None else [])
    chosen = list(dict.fromkeys(mandatory))[:n_frames]
    # lexsort: the last key is primary, so this orders by descending score, then ascending index.
    order = np.lexsort((np.arange(length), -score))
    taken = set(chosen)
    for index in order:
        if len(chosen) == n_frames:
            break
        if int(index) not in taken:
            chosen.append(int(index))
            taken.add(int(index))
    return sorted(chosen)


# Names how frames are picked: the algorithm above and how the motion it reads is measured.
# A change of the code that changes the frames picked gets a new name, so clips sampled before are
# not taken for clips sampled now; the old names stay known, as adapters trained on them are
# served with them. -1 (the default): every frame scaled to the motion size in RGB by decord,
# then gray. -2: the decoder's luma plane read at 2x2 points of each cell of a grid of that
# size, with no scaling or conversion; the CPU stage takes 1.3-1.45x less CPU a clip. It
# picks 85-93% of the same frames; on the tiny synthetic recipe it trained within a clip of -1
# on two seeds of three and collapsed to the majority answer on the third, so it waits for a
# comparison on real footage before it becomes the default.
SAMPLERS = ("motion-adaptive-1", "motion-adaptive-2")
SAMPLER = SAMPLERS[0]


@dataclass(frozen=True)
class FrameSettings:
    """How a clip's frames are chosen and sized. A model learns the frames it is trained on:
    an adapter is served with the settings it was trained with, and a clip sampled under other
    settings is another clip (with predictions of its own)."""

    frames_per_clip: int = 8
    clip_seconds: float = 5.0
    max_side: int = 336
    motion_size: tuple[int, int] = (160, 120)
    sampler: str = SAMPLER

    @property
    def key(self) -> str:
        """A short name of these settings, as clips record it."""
        width, height = self.motion_size
        return (
            f"{self.sampler}/{self.frames_per_clip}f/{self.clip_seconds:g}s/"
            f"{self.max_side}px/{width}x{height}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "motion_size": list(self.motion_size)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameSettings:
        return cls(**{**data, "motion_size": tuple(data["motion_size"])})
