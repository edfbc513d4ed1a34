"""decord, opened and read with every failure as a VideoDecodeError in a user's words."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import decord
import numpy as np


class VideoDecodeError(Exception):
    """A video cannot be read: empty, truncated, corrupt, not a video, or without frames."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot decode {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_batch(reader: decord.VideoReader, indices: list[int]) -> np.ndarray:
    return to_numpy(reader.get_batch(indices))


def to_numpy(batch: object) -> np.ndarray:
    # decord's output type follows a process-wide "bridge" another module may have switched.
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):
        return batch.numpy()
    return np.asarray(batch)


def frame_rate(path: str | os.PathLike[str], reader: decord.VideoReader) -> float:
    fps = float(reader.get_avg_fps())
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(path, f"no usable frame rate (container says {fps})")
    return fps


def open_reader(path: str | os.PathLike[str], threads: int = 0, **size: int) -> decord.VideoReader:
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
        reason = decord_reason(exc)
        if reason.startswith("Error reading "):  # decord's only words when FFmpeg cannot open it
            reason = "FFmpeg cannot open the container: not a video, or damaged/truncated"
        raise VideoDecodeError(path, f"not a readable video (decord: {reason})") from exc


def decoded(path: str | os.PathLike[str], read: Callable[[], np.ndarray], what: str) -> np.ndarray:
    try:
        return read()
    except (RuntimeError, decord.DECORDError, StopIteration) as exc:
        reason = f"decoding {what} failed; truncated or corrupt? (decord: {decord_reason(exc)})"
        raise VideoDecodeError(path, reason) from exc


def decord_reason(exc: BaseException) -> str:
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
