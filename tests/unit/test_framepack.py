"""Frame packs: round trip, byte-stable output, and clear errors for damaged packs."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from packsight.video.framepack import FramePackError, pack_frames, unpack_frames


def _frames(n: int = 8, height: int = 252, width: int = 336) -> np.ndarray:
    """Smooth gradients with a moving square: picture-like content, as JPEG expects."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xs * 255 // width + i * 9) % 256
        frames[i, ..., 1] = ys * 255 // height
        frames[i, ..., 2] = 128
        frames[i, 40:80, 20 + 10 * i : 60 + 10 * i] = (230, 180, 120)
    return frames


META = {"clip_id": "U0108_S0500_t0035", "frame_indices": [0, 14, 30, 98, 124], "fps": 25.0}


def test_round_trip_keeps_shape_meta_and_close_pixels() -> None:
    frames = _frames()
    restored, meta = unpack_frames(pack_frames(frames, meta=META))
    assert restored.shape == frames.shape and restored.dtype == np.uint8
    assert meta == META
    error = np.abs(restored.astype(np.int16) - frames.astype(np.int16))
    assert error.mean() < 2.0


def test_pack_is_a_stored_zip_of_jpegs_and_meta() -> None:
    data = pack_frames(_frames(3, 56, 84), meta={})
    with zipfile.ZipFile(io.BytesIO(data)) as pack:
        assert pack.namelist() == ["0000.jpg", "0001.jpg", "0002.jpg", "meta.json"]
        assert {info.compress_type for info in pack.infolist()} == {zipfile.ZIP_STORED}
        assert pack.read("0000.jpg")[:3] == b"\xff\xd8\xff"


def test_same_frames_give_the_same_bytes() -> None:
    frames = _frames(2)
    assert pack_frames(frames, meta=META) == pack_frames(frames.copy(), meta=dict(META))


def test_a_pack_is_much_smaller_than_raw_frames() -> None:
    frames = _frames()
    assert len(pack_frames(frames, meta=META)) < frames.nbytes / 10


def _rebuild(
    pack_bytes: bytes, *, drop: str = "", replace: dict[str, bytes] | None = None
) -> bytes:
    """A valid zip holding the pack's members, less `drop`, with some contents replaced."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(pack_bytes)) as source, zipfile.ZipFile(buffer, "w") as out:
        for name in source.namelist():
            if name != drop:
                out.writestr(name, (replace or {}).get(name, source.read(name)))
    return buffer.getvalue()


def _damaged(good: bytes, damage: str) -> bytes:
    return {
        "empty": lambda: b"",
        "not-a-zip": lambda: b"definitely not a zip file",
        "truncated": lambda: good[: len(good) // 2],
        "flipped-bytes": lambda: good[:100] + bytes(b ^ 0xFF for b in good[100:300]) + good[300:],
        "no-meta": lambda: _rebuild(good, drop="meta.json"),
        "missing-frame": lambda: _rebuild(good, drop="0001.jpg"),
        "bad-jpeg": lambda: _rebuild(good, replace={"0000.jpg": b"\xff\xd8 junk"}),
        "bad-meta": lambda: _rebuild(good, replace={"meta.json": b"{not json"}),
        "other-format": lambda: _rebuild(good, replace={"meta.json": b'{"format": 99}'}),
    }[damage]()


@pytest.mark.parametrize(
    "damage",
    ["empty", "not-a-zip", "truncated", "flipped-bytes", "no-meta", "missing-frame", "bad-jpeg",
     "bad-meta", "other-format"],
)  # fmt: skip
def test_damaged_packs_raise_frame_pack_error(damage: str) -> None:
    good = pack_frames(_frames(2, 56, 84), meta={"a": 1})
    with pytest.raises(FramePackError, match="frame pack"):
        unpack_frames(_damaged(good, damage))


def test_implausible_header_is_rejected_before_allocating() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as pack:
        header = '{"format": 1, "frames": 100000000, "height": 9999, "width": 9999, "meta": {}}'
        pack.writestr("meta.json", header)
    with pytest.raises(FramePackError, match="implausible"):
        unpack_frames(buffer.getvalue())


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((0, 8, 8, 3), np.uint8),
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((2, 8, 8), np.uint8),
        np.zeros((2, 8, 8, 4), np.uint8),
    ],
)
def test_pack_rejects_frames_it_cannot_store(frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        pack_frames(frames, meta={})


def test_pack_rejects_meta_that_is_not_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        pack_frames(_frames(1, 28, 28), meta={"when": object()})
