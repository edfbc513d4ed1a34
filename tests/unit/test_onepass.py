"""Sampling in one decode gives the two-pass path's clips: the same windows, picks and pixels."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import packsight.video.luma as luma
import packsight.video.onepass as onepass
from packsight.video.decode import VideoDecodeError, decode_clips, plan_clips
from packsight.video.onepass import _Window, sample_clips
from packsight.video.sampling import (
    SAMPLER,
    SAMPLERS,
    motion_magnitude,
    sample_motion_adaptive,
)
from packsight.video.synth import SyntheticVideo, write_synthetic_archive

PICKS = 8
SETTINGS = {"frames_per_clip": PICKS, "clip_seconds": 2.0, "motion_size": (160, 120), "threads": 1}


@pytest.fixture
def decord_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The windows read with decord (the real reads, counted), in a process where no kind of
    frame has been checked against decord yet."""
    reads: list[int] = []

    def counted(path, info, plans, **kwargs):
        reads.extend(plan.index for plan in plans)
        return decode_clips(path, info, plans, **kwargs)

    monkeypatch.setattr(onepass, "_AGREES", {})
    monkeypatch.setattr(onepass, "decode_clips", counted)
    return reads


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticVideo:
    """One 6 s, 25 fps, 320x240 session with moving parts: three 2 s windows."""
    out = tmp_path_factory.mktemp("archive")
    (video,) = write_synthetic_archive(out, videos=1, seed=11, min_seconds=6, max_seconds=6)
    return video


def _write(path: Path, *, frames: int, size: tuple[int, int], pix_fmt: str, **options: str) -> Path:
    """A drifting noise pattern with bursts of motion, encoded by libx264 (B-frames on)."""
    width, height = size
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        shift = 0
        for i in range(frames):
            shift += int(rng.integers(0, 12)) if i % 9 < 3 else 0
            image = np.roll(base, shift, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _two_pass(path: Path, sampler: str, **settings: object) -> list:
    info, plans = plan_clips(path, sampler=sampler, **SETTINGS | settings)  # type: ignore[arg-type]
    return list(decode_clips(path, info, plans, max_side=112, threads=1))


def _one_pass(path: Path, sampler: str, **settings: object) -> list:
    _, clips = sample_clips(path, sampler=sampler, max_side=112, **SETTINGS | settings)  # type: ignore[arg-type]
    return list(clips)


def _assert_same(one: list, two: list) -> None:
    assert [(c.index, c.start_frame, c.end_frame) for c in one] == [
        (c.index, c.start_frame, c.end_frame) for c in two
    ]
    assert [c.frame_indices for c in one] == [c.frame_indices for c in two]
    for a, b in zip(one, two, strict=True):
        assert a.frames.dtype == b.frames.dtype == np.uint8
        np.testing.assert_array_equal(a.frames, b.frames)  # every pixel


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_one_decode_gives_the_two_pass_clips(
    synthetic: SyntheticVideo, sampler: str, decord_reads: list[int]
) -> None:
    one = _one_pass(synthetic.path, sampler)
    assert decord_reads == [0]  # the check of the first window; the rest from the one decode
    assert len(one) == 3 and len({c.frame_indices for c in one}) > 1
    _assert_same(one, _two_pass(synthetic.path, sampler))
    assert _one_pass(synthetic.path, sampler) and decord_reads == [0]  # checked once a process


@pytest.mark.parametrize(
    ("size", "pix_fmt", "options"),
    [
        ((320, 240), "yuv420p", {}),
        ((200, 150), "yuv420p", {"x264-params": "colormatrix=bt709:colorprim=bt709"}),
        ((320, 180), "yuvj420p", {}),  # full-range luma
        ((240, 160), "yuv444p", {}),
    ],
)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_pixels_match_decord_whatever_the_format(
    tmp_path: Path, sampler: str, size: tuple[int, int], pix_fmt: str, options: dict,
    decord_reads: list[int],
) -> None:  # fmt: skip
    path = _write(tmp_path / "v.mp4", frames=110, size=size, pix_fmt=pix_fmt, **options)
    one = _one_pass(path, sampler)
    assert decord_reads == [0] and onepass._AGREES and all(onepass._AGREES.values())
    _assert_same(one, _two_pass(path, sampler))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_gpus_decoder_gives_the_same_clips(
    synthetic: SyntheticVideo, sampler: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """NVDEC's frames where a CUDA device opens; else the CPU decodes, and says so once."""
    monkeypatch.setattr(luma, "_UNAVAILABLE", set())
    one = _one_pass(synthetic.path, sampler, device="cuda")
    _assert_same(one, _two_pass(synthetic.path, sampler))
    _assert_same(_one_pass(synthetic.path, sampler, device="cuda"), one)
    warned = [r for r in caplog.records if "no cuda video decoder" in r.getMessage()]
    assert len(warned) == (1 if "cuda" in luma._UNAVAILABLE else 0)


def test_a_window_shorter_than_its_picks_repeats_frames(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.mp4", frames=5, size=(160, 120), pix_fmt="yuv420p")
    one = _one_pass(path, SAMPLERS[1])
    assert len(one) == 1 and len(set(one[0].frame_indices)) < len(one[0].frame_indices)
    _assert_same(one, _two_pass(path, SAMPLERS[1]))


def test_a_pick_that_was_not_held_is_decoded_again(
    synthetic: SyntheticVideo, monkeypatch: pytest.MonkeyPatch, decord_reads: list[int]
) -> None:
    """Holding two candidates a window misses most picks: they come from decord instead."""
    monkeypatch.setattr(onepass, "SPARE_CANDIDATES", 2 - PICKS)
    one = _one_pass(synthetic.path, SAMPLERS[1])
    assert decord_reads == [0, 1, 2]
    _assert_same(one, _two_pass(synthetic.path, SAMPLERS[1]))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_scaler_unlike_decords_hands_the_video_to_the_two_pass_path(
    synthetic: SyntheticVideo, monkeypatch: pytest.MonkeyPatch, decord_reads: list[int],
    sampler: str,
) -> None:  # fmt: skip
    """As a build of FFmpeg that rounds differently would: each pixel one level brighter."""
    scale = onepass.Scaler.__call__
    monkeypatch.setattr(onepass.Scaler, "__call__", lambda self, f: scale(self, f) | 1)
    one = _one_pass(synthetic.path, sampler)
    assert decord_reads == [0, 0, 1, 2]  # the check, then every window from the reference
    assert list(onepass._AGREES.values()) == [False]
    _assert_same(one, _two_pass(synthetic.path, sampler))
    decord_reads.clear()
    _one_pass(synthetic.path, sampler)  # the next video of that kind: straight to the reference
    assert decord_reads == [0, 1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_a_window_holds_few_frames_and_every_pick(seed: int) -> None:
    rng = np.random.default_rng(seed)
    length, picks, keep = 125, PICKS, PICKS + onepass.SPARE_CANDIDATES
    # Motion with ties: a few levels of change between gray frames.
    steps = rng.integers(0, 4, length) * (rng.random(length) < 0.6)
    grays = np.cumsum(steps)[:, None, None] + np.zeros((1, 6, 8), dtype=np.int64)
    window = _Window(0, 0, length, keep)
    most = 0
    for position, gray in enumerate(grays.astype(np.uint8)):
        window.add(f"frame {position}", gray)  # type: ignore[arg-type]
        most = max(most, len(window.held))
    assert most <= keep + 2
    chosen = sample_motion_adaptive(motion_magnitude(grays.astype(np.uint8)), picks)
    assert window.picks(picks) == chosen
    assert set(chosen) <= set(window.held)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_video_cut_short_fails_as_the_two_pass_path_fails_it(
    tmp_path: Path, sampler: str
) -> None:
    """The index is first and the last frame cut: decord counts every frame, PyAV decodes fewer;
    the reference takes over from the window that did not finish, and decides."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        noise = np.random.default_rng(0).integers(0, 256, (120, 120, 160, 3), dtype=np.uint8)
        for image in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(VideoDecodeError) as reference:
        _two_pass(cut, sampler)
    with pytest.raises(VideoDecodeError) as caught:
        _one_pass(cut, sampler)
    assert str(caught.value) == str(reference.value)


def test_a_consumer_may_stop_early(synthetic: SyntheticVideo) -> None:
    _, clips = sample_clips(synthetic.path, max_side=112, **SETTINGS)  # type: ignore[arg-type]
    first = next(clips)
    clips.close()  # type: ignore[attr-defined]
    assert first.frame_indices == _one_pass(synthetic.path, SAMPLER)[0].frame_indices


def test_known_boundaries_take_the_two_pass_path(synthetic: SyntheticVideo) -> None:
    one = _one_pass(synthetic.path, SAMPLERS[0], boundaries=[60])
    assert 60 - one[1].start_frame in one[1].frame_indices
    _assert_same(one, _two_pass(synthetic.path, SAMPLERS[0], boundaries=[60]))
