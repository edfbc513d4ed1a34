"""Sampling in one decode: each decoded frame serves both the motion pass and the picks.

The two-pass path (`plan_clips`, then `decode_clips`) decodes every window twice: all of its
frames for motion, then the picked ones again with decord, which seeks back and decodes forward
from a keyframe. Here each frame is decoded once; while a window decodes, the frames it may pick
are held (its first and last, and the ones that moved most so far), and once its motion is known
the picks are scaled from them by FFmpeg's scale filter with the settings decord uses (bilinear,
then RGB). The windows, the picks and every pixel are those of the two-pass path.

Only a few frames are held at a time, not the window: a window's worth of 720p frames is 170 MB,
and cycling the decoder through that many buffers cost a third of the decoding time in cache
misses. A pick that was not held (motion so close to a tie that the exact measure ranks it
differently) is decoded again with decord, as the two-pass path would.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from itertools import pairwise

import av
import numpy as np

from packsight.video.decode import (
    ClipPlan,
    SampledClip,
    VideoInfo,
    decode_clips,
    model_frame_size,
    plan_clips,
    probe_video,
    split_windows,
    to_gray,
)
from packsight.video.luma import LumaCells, LumaDecodeError, decoded_frames
from packsight.video.reader import VideoDecodeError
from packsight.video.sampling import SAMPLER, SAMPLERS, motion_magnitude, sample_motion_adaptive

# Frames held beyond those a window picks, for ranks the exact motion measure may reorder.
SPARE_CANDIDATES = 8


def sample_clips(
    path: str | os.PathLike[str],
    *,
    frames_per_clip: int = 8,
    clip_seconds: float = 5.0,
    max_side: int = 336,
    motion_size: tuple[int, int] = (160, 120),
    boundaries: Sequence[int] | None = None,
    threads: int = 0,
    sampler: str = SAMPLER,
) -> tuple[VideoInfo, Iterator[SampledClip]]:
    """The video's info and its clips, one window at a time: what `plan_clips` then
    `decode_clips` give with the same arguments, decoding each frame once. With `boundaries`
    (training's windows, where any frame near one may be picked) it takes the two-pass path."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; this version knows {', '.join(SAMPLERS)}")
    if boundaries:
        info, plans = plan_clips(
            path,
            frames_per_clip=frames_per_clip,
            clip_seconds=clip_seconds,
            motion_size=motion_size,
            boundaries=boundaries,
            threads=threads,
            sampler=sampler,
        )
        return info, decode_clips(path, info, plans, max_side=max_side, threads=threads)
    info = probe_video(path)
    motion_of: Callable[[av.VideoFrame], np.ndarray]
    if sampler == SAMPLERS[0]:  # decord's frames scaled to the grid, then gray
        scaled = Scaler(motion_size)
        motion_of = lambda frame: to_gray(scaled(frame))  # noqa: E731
    else:
        motion_of = LumaCells(motion_size)
    windows = split_windows(info.frame_count, info.fps, clip_seconds)
    sampling = _Sampling(path, info, frames_per_clip, max_side, threads)
    return info, sampling.clips(windows, motion_of)


class Scaler:
    """uint8 [h, w, 3] RGB of a decoded frame at `size`, pixel for pixel as decord scales it."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self._graphs: dict[tuple[int, int, str], av.filter.Graph] = {}

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        shape = (frame.width, frame.height, frame.format.name)
        graph = self._graphs.get(shape) or self._graphs.setdefault(shape, self._graph(frame))
        graph.push(frame)
        return graph.pull().to_ndarray()

    def _graph(self, frame: av.VideoFrame) -> av.filter.Graph:
        width, height = self.size
        graph = av.filter.Graph()
        graph.threads = 1  # a sampling process has its core; slice threads only add overhead
        chain = [
            graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format,
                time_base=frame.time_base or Fraction(1, 1000),
            ),
            graph.add("scale", f"{width}:{height}:flags=bilinear"),
            graph.add("format", "rgb24"),
            graph.add("buffersink"),
        ]
        for source, sink in pairwise(chain):
            source.link_to(sink)
        graph.configure()
        return graph


class _Window:
    """One window while it decodes: every frame's motion features, and the frames it may pick
    (its first and last, and the `keep` that moved most so far)."""

    def __init__(self, index: int, start: int, end: int, keep: int) -> None:
        self.index, self.start, self.end, self.keep = index, start, end, keep
        self.features: list[np.ndarray] = []
        self.held: dict[int, av.VideoFrame] = {}
        self._ranked: list[tuple[float, int]] = []  # (motion, -position): the least moved first

    def add(self, frame: av.VideoFrame, feature: np.ndarray) -> None:
        position = len(self.features)
        self.features.append(feature)
        self.held[position] = frame
        if position in (0, self.end - self.start - 1):  # always picked
            return
        moved = float(np.abs(feature.astype(np.int16) - self.features[-2]).mean())
        heapq.heappush(self._ranked, (moved, -position))  # ties: the later frame goes first
        if len(self._ranked) > self.keep:
            _, dropped = heapq.heappop(self._ranked)
            del self.held[-dropped]

    def picks(self, frames_per_clip: int) -> list[int]:
        # motion[0] = 0: a clip's picks do not depend on the frame before it.
        return sample_motion_adaptive(motion_magnitude(np.stack(self.features)), frames_per_clip)


class _Sampling:
    def __init__(
        self,
        path: str | os.PathLike[str],
        info: VideoInfo,
        frames_per_clip: int,
        max_side: int,
        threads: int,
    ) -> None:
        self.path, self.info, self.threads = path, info, threads
        self.frames_per_clip, self.max_side = frames_per_clip, max_side
        self.scaler = Scaler(model_frame_size(info.width, info.height, max_side))

    def clips(
        self, windows: list[tuple[int, int]], motion_of: Callable[[av.VideoFrame], np.ndarray]
    ) -> Iterator[SampledClip]:
        keep = self.frames_per_clip + SPARE_CANDIDATES
        pending = iter([_Window(i, s, e, keep) for i, (s, e) in enumerate(windows)])
        window, count = next(pending, None), 0
        try:
            for frame in decoded_frames(self.path, self.threads):
                count += 1
                if window is None:  # more frames than the container said: refused below
                    continue
                window.add(frame, motion_of(frame))
                if count == window.end:
                    yield self._clip(window)
                    window = next(pending, None)
        except (LumaDecodeError, av.FFmpegError) as exc:
            detail = exc.reason if isinstance(exc, LumaDecodeError) else str(exc)
            reason = f"decoding frames failed after frame {count} (FFmpeg: {detail})"
            raise VideoDecodeError(self.path, reason) from exc
        if count != self.info.frame_count:
            reason = (
                f"decoding frames gave {count} of {self.info.frame_count}; truncated or corrupt?"
            )
            raise VideoDecodeError(self.path, reason)

    def _clip(self, window: _Window) -> SampledClip:
        picks = tuple(window.picks(self.frames_per_clip))
        plan = ClipPlan(window.index, window.start, window.end, picks)
        if all(i in window.held for i in picks):
            scaled = {i: self.scaler(window.held[i]) for i in sorted(set(picks))}
            frames = np.stack([scaled[i] for i in picks])
        else:
            clip = decode_clips(self.path, self.info, [plan], max_side=self.max_side)
            frames = next(clip).frames
        return SampledClip(plan.index, plan.start_frame, plan.end_frame, picks, frames)
