"""The motion pass read from the decoder's own luma plane.

Every frame is decoded once and nothing is scaled or converted: the brightness plane FFmpeg
decodes into is read at 2x2 points in each cell of a small grid, and their mean stands for the
cell. Scaling every frame to a small RGB image and back to gray cost more than the decoding
itself; motion only needs brightness changes. One point a cell would be cheaper still, but it
keeps the codec's pixel noise that a cell's mean averages out (a quarter of the picks moved).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
from av.codec.hwaccel import HWAccel

# Pixel formats whose first plane is 8-bit luma, as decoded (H.264, HEVC and VP9 give these).
# Any other format is converted to 8-bit gray first: slower, the same measure.
_LUMA_FIRST = frozenset(
    f"yuv{range_}{layout}"
    for layout in ("420p", "422p", "444p", "440p")
    for range_ in ("", "j")  # yuvj*: full-range luma, same layout
) | {"yuv411p", "yuv410p", "nv12", "nv21", "gray"}
_CHUNK_FRAMES = 64
_UNAVAILABLE: set[str] = set()  # hardware decoders this process could not open
log = logging.getLogger(__name__)


class LumaDecodeError(Exception):
    """FFmpeg stopped decoding the video; `frames` decoded before it did."""

    def __init__(self, frames: int, reason: str) -> None:
        super().__init__(reason)
        self.frames = frames
        self.reason = reason


def luma_chunks(
    path: str | os.PathLike[str], grid: tuple[int, int], threads: int = 0
) -> Iterator[np.ndarray]:
    """uint8 [t, grid height, grid width] chunks: every frame's luma at the grid's points, in
    presentation order. `threads`: decoder threads (0: FFmpeg's choice, one per core)."""
    cells = LumaCells(grid)
    chunk = []
    for frame in decoded_frames(path, threads):
        chunk.append(cells(frame))
        if len(chunk) == _CHUNK_FRAMES:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def decoded_frames(
    path: str | os.PathLike[str], threads: int = 0, device: str = "cpu"
) -> Iterator[av.VideoFrame]:
    """Every frame of the first video stream, decoded once, in presentation order; a failure of
    FFmpeg is a LumaDecodeError that counts the frames decoded before it. `device`: "cpu", or an
    FFmpeg hardware device type ("cuda": NVDEC) whose frames come back in system memory."""
    frames = 0
    try:
        with _open(path, device) as container:
            stream = container.streams.video[0]
            if device == "cpu":  # a hardware decoder keeps its own queue of frames
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = threads
            for frame in container.decode(stream):
                yield frame
                frames += 1
    except (av.FFmpegError, IndexError) as exc:  # IndexError: no video stream
        reason = str(exc) if isinstance(exc, av.FFmpegError) else "no video stream"
        raise LumaDecodeError(frames, reason) from exc


def _open(path: str | os.PathLike[str], device: str) -> av.container.InputContainer:
    if device != "cpu" and device not in _UNAVAILABLE:  # tried once a process
        try:  # a stream the device cannot decode falls back to FFmpeg's software decoder
            return av.open(os.fspath(path), hwaccel=HWAccel(device, allow_software_fallback=True))
        except av.FFmpegError as exc:  # no such device here (no GPU, no driver, no NVDEC)
            log.warning("no %s video decoder (%s): decoding on the CPU", device, exc)
            _UNAVAILABLE.add(device)
    return av.open(os.fspath(path))


class LumaCells:
    """A frame's luma at 2x2 points in each cell of `grid`, averaged: uint8 [rows, columns]."""

    def __init__(self, grid: tuple[int, int]) -> None:
        width, height = grid
        if width <= 0 or height <= 0:
            raise ValueError(f"the motion grid must be positive, got {width}x{height}")
        self.grid = grid
        self._points: dict[tuple[int, int], list[tuple[Any, ...]]] = {}

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        size = (frame.width, frame.height)
        if size not in self._points:
            self._points[size] = _cell_points(size, self.grid)
        return _cell_means(_luma(frame), self._points[size])


def _cell_points(size: tuple[int, int], grid: tuple[int, int]) -> list[tuple[Any, ...]]:
    """Four index pairs, one per point of a 2x2 pattern inside every grid cell of a frame of
    `size`: plain strides when the grid divides the frame (the usual case, several times
    cheaper to read), else open meshes of the same points."""
    (width, height), (columns, rows) = size, grid
    offsets = (0.25, 0.75)  # of a cell
    if width % columns == 0 and height % rows == 0:
        down, across = height // rows, width // columns
        return [
            (slice(int(dy * down), None, down), slice(int(dx * across), None, across))
            for dy in offsets
            for dx in offsets
        ]
    meshes = []
    for dy in offsets:
        ys = np.minimum(((np.arange(rows) + dy) * height / rows).astype(np.intp), height - 1)
        for dx in offsets:
            xs = np.minimum(
                ((np.arange(columns) + dx) * width / columns).astype(np.intp), width - 1
            )
            meshes.append(np.ix_(ys, xs))
    return meshes


def _cell_means(luma: np.ndarray, points: list[tuple[Any, ...]]) -> np.ndarray:
    """uint8 [rows, columns]: each cell's mean of its points, rounded (a fresh array: a view
    would keep the decoder's frame buffer alive)."""
    total = luma[points[0]].astype(np.uint16)
    for index in points[1:]:
        total += luma[index]
    total += len(points) // 2
    return (total // len(points)).astype(np.uint8)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name not in _LUMA_FIRST:
        frame = frame.reformat(format="gray")
    plane = frame.planes[0]
    # A plane has the buffer protocol (no copy); its type stub does not say so.
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)  # type: ignore[call-overload]
    return rows[: plane.height, : plane.width]
