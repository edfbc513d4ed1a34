"""Video decoding on real files: probing, windows, model sizes, sampling, and broken inputs."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest

from packsight.video.decode import (
    VideoDecodeError,
    VideoInfo,
    decode_clips,
    is_video_key,
    model_frame_size,
    motion_signal,
    plan_clips,
    probe_video,
    split_windows,
)
from packsight.video.onepass import sample_clips
from packsight.video.sampling import SAMPLERS
from packsight.video.synth import SyntheticVideo, write_synthetic_archive


def sample_video(path: Path, **settings: float) -> tuple[VideoInfo, list]:
    """Every clip of a video, as labelling samples it."""
    info, clips = sample_clips(path, **settings)  # type: ignore[arg-type]
    return info, list(clips)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticVideo:
    """One 8 s, 25 fps, 320x240 session: 200 frames, two 5 s windows (125 + 75 frames)."""
    out = tmp_path_factory.mktemp("archive")
    (video,) = write_synthetic_archive(out, videos=1, seed=7, min_seconds=8, max_seconds=8)
    return video


def _write_faststart_mp4(path: Path, frames: int = 50) -> None:
    """An mp4 whose index (moov) comes first, so a truncated copy still opens and fails later."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# --- windows, sizes and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame_count", "fps", "clip_seconds"),
    [(1, 25, 5), (124, 25, 5), (125, 25, 5), (126, 25, 5), (1000, 25, 5), (901, 29.97, 5),
     (90_000, 25, 5), (37, 10, 0.3)],
)  # fmt: skip
def test_windows_cover_every_frame_exactly_once(frame_count: int, fps: float, clip_seconds: float):
    windows = split_windows(frame_count, fps, clip_seconds)
    assert windows[0][0] == 0 and windows[-1][1] == frame_count
    assert all(a_end == b_start for (_, a_end), (b_start, _) in pairwise(windows))
    assert all(end > start for start, end in windows)


def test_short_tail_joins_the_previous_window_and_long_tail_stays() -> None:
    assert split_windows(260, 25) == [(0, 125), (125, 260)]  # tail of 10 < 62.5 frames
    assert split_windows(200, 25) == [(0, 125), (125, 200)]  # tail of 75 >= 62.5 frames
    assert split_windows(50, 25) == [(0, 50)]  # shorter than one window
    assert split_windows(130, 25, min_tail_fraction=0.0) == [(0, 125), (125, 130)]


@pytest.mark.parametrize("args", [(0, 25.0), (10, 0.0), (10, 25.0, -1.0), (10, 25.0, 5.0, 1.5)])
def test_split_windows_rejects_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        split_windows(*args)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((640, 480), (336, 252)), ((320, 240), (336, 252)), ((1920, 1080), (336, 196)),
     ((480, 640), (252, 336)), ((336, 336), (336, 336)), ((10, 1000), (28, 336))],
)  # fmt: skip
def test_model_frame_size_keeps_aspect_in_multiples_of_28(size, expected) -> None:
    width, height = model_frame_size(*size)
    assert (width, height) == expected
    assert width % 28 == 0 and height % 28 == 0 and max(width, height) <= 336


def test_model_frame_size_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        model_frame_size(0, 480)
    with pytest.raises(ValueError):
        model_frame_size(640, 480, max_side=20)


def test_video_keys() -> None:
    assert is_video_key("x/Y.MP4") and is_video_key("a.webm")
    assert not is_video_key("U0101/annotation/S0100.csv") and not is_video_key("mp4")


# --- decoding real files ------------------------------------------------------------------------


def test_probe_reads_fps_count_and_native_size(synthetic: SyntheticVideo) -> None:
    info = probe_video(synthetic.path)
    assert info == VideoInfo(fps=25.0, frame_count=synthetic.frame_count, width=320, height=240)
    assert info.duration_s == pytest.approx(8.0)


def test_sample_video_returns_model_sized_frames_per_window(synthetic: SyntheticVideo) -> None:
    info, clips = sample_video(synthetic.path)
    assert info.frame_count == 200
    assert [(c.index, c.start_frame, c.end_frame) for c in clips] == [(0, 0, 125), (1, 125, 200)]
    for clip in clips:
        assert clip.frames.shape == (8, 252, 336, 3) and clip.frames.dtype == np.uint8
        assert len(clip.frame_indices) == 8 and list(clip.frame_indices) == sorted(
            clip.frame_indices
        )
        assert clip.frame_indices[0] == 0 and clip.frame_indices[-1] == clip.frame_count - 1
        assert clip.frames.std() > 1  # real picture content, not blank frames


def test_sampled_frames_match_a_direct_decode_of_the_same_frames(synthetic: SyntheticVideo):
    import decord

    _, clips = sample_video(synthetic.path, max_side=168)
    width, height = model_frame_size(320, 240, max_side=168)
    reader = decord.VideoReader(str(synthetic.path), width=width, height=height)
    clip = clips[1]
    expected = reader.get_batch([clip.start_frame + i for i in clip.frame_indices]).asnumpy()
    np.testing.assert_array_equal(clip.frames, expected)


def test_known_boundaries_are_sampled_in_their_window(synthetic: SyntheticVideo) -> None:
    # Frame 140 lies in the second window; the first window has no boundary.
    _, plans = plan_clips(synthetic.path, boundaries=[140, 5000])
    assert 140 - 125 in plans[1].frame_indices
    _, unchanged = plan_clips(synthetic.path)
    assert plans[0] == unchanged[0]


def test_plan_and_decode_stream_the_same_clips_as_sample_video(synthetic: SyntheticVideo):
    info, plans = plan_clips(synthetic.path, frames_per_clip=4, clip_seconds=2.0)
    streamed = list(decode_clips(synthetic.path, info, plans, max_side=112))
    _, clips = sample_video(synthetic.path, frames_per_clip=4, clip_seconds=2.0, max_side=112)
    assert [c.frame_indices for c in streamed] == [c.frame_indices for c in clips]
    assert streamed[0].frames.shape == (4, 84, 112, 3)
    assert len(clips) == 4  # 200 frames / 50-frame windows


def test_motion_sampling_is_deterministic(synthetic: SyntheticVideo) -> None:
    _, first = plan_clips(synthetic.path)
    _, second = plan_clips(synthetic.path)
    assert first == second


def test_the_decoder_thread_count_changes_no_pick_and_no_pixel(synthetic: SyntheticVideo):
    """Workers decode with one thread each (faster under prefork); the clips must be the ones
    decord's own thread choice gives."""
    for sampler in SAMPLERS:
        auto, single = (
            plan_clips(synthetic.path, clip_seconds=2.0, threads=n, sampler=sampler) for n in (0, 1)
        )
        assert auto == single
    info, plans = single
    frames = [
        [c.frames for c in decode_clips(synthetic.path, info, plans, max_side=112, threads=n)]
        for n in (0, 1)
    ]
    assert all(np.array_equal(a, b) for a, b in zip(*frames, strict=True))


def test_the_luma_motion_follows_the_first_samplers_scaled_motion(synthetic: SyntheticVideo):
    """The default sampler reads motion off the decoder's luma plane; the first sampler scaled
    every frame to RGB first. Both see the same movement, frame by frame."""
    info = probe_video(synthetic.path)
    luma, scaled = (motion_signal(synthetic.path, info, (160, 120), 1, s) for s in SAMPLERS)
    assert len(luma) == len(scaled) == info.frame_count
    assert luma[0] == scaled[0] == 0.0
    assert np.corrcoef(luma[1:], scaled[1:])[0, 1] > 0.9
    for sampler in SAMPLERS:
        _, plans = plan_clips(synthetic.path, sampler=sampler)
        assert all(len(p.frame_indices) == 8 for p in plans)
    with pytest.raises(ValueError, match="unknown sampler 'fast'"):
        plan_clips(synthetic.path, sampler="fast")


def _write_moving_bar(path: Path, codec: str, pix_fmt: str, **options: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 160, 120, pix_fmt
        for i in range(40):
            image = np.full((120, 160, 3), 40, dtype=np.uint8)
            image[:, (i * i) % 140 : (i * i) % 140 + 20] = 220  # a bar jumping further each frame
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_motion_is_measured_on_luma_whatever_the_pixel_format(tmp_path: Path) -> None:
    """RGB-coded video (FFV1 bgr0, H.264 in planar RGB) has no luma plane to read: it is
    converted to gray, and measures the motion the YUV coding of the same frames shows. Frames
    coded out of order (B-frames) are measured in the order they are shown."""
    codings = [
        ("libx264", "yuv420p", "mp4", {}),
        ("ffv1", "bgr0", "mkv", {}),
        ("libx264rgb", "rgb24", "mp4", {}),
        ("libx264", "yuv420p", "mp4", {"preset": "medium", "bf": "3"}),
    ]
    motions = []
    for n, (codec, pix_fmt, ext, options) in enumerate(codings):
        path = tmp_path / f"bar-{n}.{ext}"
        _write_moving_bar(path, codec, pix_fmt, **options)
        info = probe_video(path)
        motions.append(motion_signal(path, info, (160, 120), 1, SAMPLERS[-1]))
    yuv = motions[0]
    assert yuv[1:].min() > 0  # the bar moves in every frame
    for other in motions[1:]:
        assert len(other) == len(yuv)
        # Range and rounding differ (limited-range luma against full-range gray); the shape not.
        assert np.corrcoef(yuv, other)[0, 1] > 0.98


# --- broken inputs ------------------------------------------------------------------------------


def test_empty_file_is_a_decode_error(tmp_path: Path) -> None:
    empty = tmp_path / "x.mp4"
    empty.write_bytes(b"")
    with pytest.raises(
        VideoDecodeError, match=r"cannot decode '.*x\.mp4': file is empty \(0 bytes\)"
    ):
        probe_video(empty)


@pytest.mark.parametrize(
    "kind", ["random", "text", "truncated", "truncated-faststart", "last-frame-cut"]
)
def test_garbage_is_a_readable_decode_error(tmp_path: Path, synthetic, kind: str) -> None:
    bad = tmp_path / f"{kind}.mp4"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(3).bytes(50_000))
    elif kind == "text":
        bad.write_text("this is a shopping list, not a video\n")
    elif kind == "truncated":  # PyAV writes the index last: half a file has none
        data = synthetic.path.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:  # index first: decord indexes all packets on open, so only a cut last frame opens
        whole = tmp_path / "whole.mp4"
        _write_faststart_mp4(whole)
        data = whole.read_bytes()
        bad.write_bytes(
            data[: int(len(data) * 0.9)] if kind == "truncated-faststart" else data[:-100]
        )
    with pytest.raises(VideoDecodeError) as caught:
        sample_video(bad)
    message = str(caught.value)
    assert message.startswith(f"cannot decode '{bad}': ")
    expected = "decoding frames" if kind == "last-frame-cut" else "not a readable video"
    assert expected in message
    # decord's source paths and C++ assertions are noise to a user
    assert "/github/workspace" not in message and "Check failed" not in message
    assert caught.value.path == str(bad)


def test_missing_file_and_directory_are_decode_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="file not found"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        probe_video(tmp_path)


@pytest.mark.parametrize("size", [(1280, 720), (640, 360), (224, 168), (1920, 1080), (100, 90)])
def test_each_cell_is_the_rounded_mean_of_its_four_points(size: tuple[int, int]) -> None:
    """Strides where the grid divides the frame, index meshes where not: the same points."""
    from packsight.video.luma import _cell_means, _cell_points

    width, height = size
    plane = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
    total = np.zeros((120, 160), dtype=np.int64)
    for dy in (0.25, 0.75):
        for dx in (0.25, 0.75):
            ys = np.minimum(((np.arange(120) + dy) * height / 120).astype(int), height - 1)
            xs = np.minimum(((np.arange(160) + dx) * width / 160).astype(int), width - 1)
            total += plane[np.ix_(ys, xs)]
    cells = _cell_means(plane, _cell_points(size, (160, 120)))
    assert cells.dtype == np.uint8 and np.array_equal(cells, (total + 2) // 4)
