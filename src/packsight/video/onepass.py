"""Sampling in one decode: each decoded frame serves both the motion pass and the picks.

The two-pass path (`plan_clips`, then `decode_clips`) decodes every window twice: all of its
frames for motion, then the picked ones again with decord, which seeks back and decodes forward
from a keyframe. Here each frame is decoded once (PyAV); while a window decodes, the frames it
may pick are held (its first and last, and the ones that moved most so far), and once its motion
is known the picks are scaled from them by FFmpeg's scale filter set as decord sets it
(bilinear, then RGB). The windows, the picks and every pixel are those of the two-pass path.

Only a few frames are held at a time, not the window: a window's worth of 720p frames is 170 MB,
and cycling the decoder through that many buffers cost a third of the decoding time in cache
misses.

The two-pass path stays the reference, and this one hands a video over to it, from the first
window not yet given out, whenever it cannot vouch for its result: the decoders disagree on the
frame count, FFmpeg fails midway, or this process's FFmpeg scales a kind of frame (pixel format
and size) differently from decord's, which the first window of each kind is checked for (they
are separate builds, and the scaler's code paths depend on the CPU). The reference then decides
as it always did, errors included. A pick that was not held (a near-tie the exact measure
ranks differently) is read with decord. Packs stored before a failure are rewritten by a retry:
their keys are their clips'.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
from packsight.video.reader import open_reader, read_batch
from packsight.video.sampling import SAMPLER, SAMPLERS, motion_magnitude, sample_motion_adaptive

log = logging.getLogger(__name__)

# Frames held beyond those a window picks, for ranks the exact motion measure may reorder.
SPARE_CANDIDATES = 8
# Per process: whether PyAV's scaling of a kind of frame gave decord's pixels when checked.
_AGREES: dict[tuple, bool] = {}


@dataclass(frozen=True)
class _Video:
    """One video's sampling arguments."""

    path: str | os.PathLike[str]
    frames_per_clip: int
    clip_seconds: float
    max_side: int
    motion_size: tuple[int, int]
    threads: int
    sampler: str
    device: str


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
    device: str = "cpu",
) -> tuple[VideoInfo, Iterator[SampledClip]]:
    """The video's info and its clips, one window at a time: what `plan_clips` then
    `decode_clips` give with the same arguments, decoding each frame once (on `device`: "cpu",
    or "cuda" for NVDEC). With `boundaries` (training's windows, where any frame near one may be
    picked) it takes the two-pass path."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; this version knows {', '.join(SAMPLERS)}")
    video = _Video(
        path, frames_per_clip, clip_seconds, max_side, motion_size, threads, sampler, device
    )
    if boundaries:
        info, plans = _plan(video, boundaries)
        return info, decode_clips(path, info, plans, max_side=max_side, threads=threads)
    info = probe_video(path)
    return info, _Sampling(video, info).clips()


def _plan(video: _Video, boundaries: Sequence[int] | None = None) -> tuple[VideoInfo, list]:
    return plan_clips(
        video.path,
        frames_per_clip=video.frames_per_clip,
        clip_seconds=video.clip_seconds,
        motion_size=video.motion_size,
        boundaries=boundaries,
        threads=video.threads,
        sampler=video.sampler,
    )


class Scaler:
    """uint8 [h, w, 3] RGB of a decoded frame at `size`, pixel for pixel as decord scales it."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self._graphs: dict[tuple[int, int, str], av.filter.Graph] = {}

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        shape = (frame.width, frame.height, frame.format.name)
        if shape not in self._graphs:
            self._graphs[shape] = self._graph(frame)
        graph = self._graphs[shape]
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


class _Handover(Exception):
    """The two-pass path takes the video over from window `index`."""

    def __init__(self, index: int) -> None:
        self.index = index


class _Sampling:
    """One video in one decode, handed over to the two-pass path where it cannot vouch."""

    def __init__(self, video: _Video, info: VideoInfo) -> None:
        self.video, self.info, self.given = video, info, 0
        self.scaler = Scaler(model_frame_size(info.width, info.height, video.max_side))
        self.motion_of: Callable[[av.VideoFrame], np.ndarray] = LumaCells(video.motion_size)
        if video.sampler == SAMPLERS[0]:  # decord's frames scaled to the grid, then gray
            self.motion_of = _ScaledGray(video.motion_size)

    def clips(self) -> Iterator[SampledClip]:
        try:
            for clip in self._one_pass():
                self.given += 1
                yield clip
            return
        except _Handover as handover:
            start = handover.index
        log.info("%s: two-pass sampling from window %d", self.video.path, start)
        _, plans = _plan(self.video)
        video = self.video
        yield from decode_clips(
            video.path, self.info, plans[start:], max_side=video.max_side, threads=video.threads
        )

    def _one_pass(self) -> Iterator[SampledClip]:
        keep = self.video.frames_per_clip + SPARE_CANDIDATES
        windows = split_windows(self.info.frame_count, self.info.fps, self.video.clip_seconds)
        pending = iter([_Window(i, s, e, keep) for i, (s, e) in enumerate(windows)])
        window, count = next(pending, None), 0
        try:
            for frame in decoded_frames(self.video.path, self.video.threads, self.video.device):
                count += 1
                if window is None:  # more frames than the container said
                    raise _Handover(self.given)
                if count == 1 and _AGREES.get(self._kind(frame)) is False:
                    raise _Handover(0)
                window.add(frame, self.motion_of(frame))
                if count == window.end:
                    clip = self._clip(window)
                    window = next(pending, None)  # the finished window's frames let go
                    yield clip
        except (LumaDecodeError, av.FFmpegError) as exc:
            log.warning("%s: decoding once failed after frame %d: %s", self.video.path, count, exc)
            raise _Handover(self.given) from exc
        if count != self.info.frame_count:
            raise _Handover(self.given)

    def _kind(self, frame: av.VideoFrame) -> tuple:
        sizes = (self.scaler.size, self.video.motion_size, self.video.sampler)
        return (frame.format.name, frame.width, frame.height, *sizes)

    def _clip(self, window: _Window) -> SampledClip:
        picks = tuple(window.picks(self.video.frames_per_clip))
        plan = ClipPlan(window.index, window.start, window.end, picks)
        if not all(i in window.held for i in picks):
            return self._decord(plan)
        scaled = {i: self.scaler(window.held[i]) for i in sorted(set(picks))}
        frames = np.stack([scaled[i] for i in picks])
        clip = SampledClip(plan.index, plan.start_frame, plan.end_frame, picks, frames)
        kind = self._kind(window.held[0])
        if kind not in _AGREES:
            _AGREES[kind] = self._agrees(window, clip)
            if not _AGREES[kind]:
                log.warning("PyAV scales %s frames unlike decord: two-pass sampling", kind[:3])
        if not _AGREES[kind]:  # this window on (the first sampler's motion is scaled too)
            raise _Handover(self.given)
        return clip

    def _decord(self, plan: ClipPlan) -> SampledClip:
        video = self.video
        clips = decode_clips(
            video.path, self.info, [plan], max_side=video.max_side, threads=video.threads
        )
        return next(clips)

    def _agrees(self, window: _Window, clip: SampledClip) -> bool:
        """Whether decord reads the window as this path did: its picks, and for the first
        sampler the gray motion frames too."""
        plan = ClipPlan(clip.index, clip.start_frame, clip.end_frame, clip.frame_indices)
        if not np.array_equal(clip.frames, self._decord(plan).frames):
            return False
        if self.video.sampler != SAMPLERS[0]:
            return True
        width, height = self.video.motion_size
        reader = open_reader(self.video.path, self.video.threads, width=width, height=height)
        gray = to_gray(read_batch(reader, list(range(window.start, window.end))))
        return np.array_equal(gray, np.stack(window.features))


class _ScaledGray:
    """A frame's motion features as the first sampler measures them: decord's scaled RGB, gray."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.scaler = Scaler(size)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return to_gray(self.scaler(frame))
