"""Frame packs: a clip's sampled frames as one compact object between the CPU and GPU stages.

A pack is an uncompressed zip (JPEG does not deflate further) of 0000.jpg, 0001.jpg, ... and
meta.json. Members carry a fixed timestamp, so the same frames and meta always give the same bytes
and re-running a CPU task rewrites an identical object.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

JPEG_QUALITY = 90
PACK_FORMAT = 1
META_NAME = "meta.json"
_MAX_DIM = 8192
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch; a wall-clock time would change the bytes


class FramePackError(ValueError):
    """Bytes that are not a valid frame pack (corrupt, truncated, or from another format)."""


def pack_frames(frames: np.ndarray, *, meta: dict[str, Any]) -> bytes:
    """Encode uint8 [n, h, w, 3] RGB frames and a JSON-serialisable `meta` dict as a pack."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 [n>0, h, w, 3], got {frames.dtype} {frames.shape}")
    header = {
        "format": PACK_FORMAT,
        "frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "meta": meta,
    }
    try:
        meta_bytes = json.dumps(header, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from exc

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as pack:
        for i, frame in enumerate(frames):
            jpeg = io.BytesIO()
            Image.fromarray(frame, "RGB").save(jpeg, format="JPEG", quality=JPEG_QUALITY)
            pack.writestr(zipfile.ZipInfo(f"{i:04d}.jpg", _FIXED_TIME), jpeg.getvalue())
        pack.writestr(zipfile.ZipInfo(META_NAME, _FIXED_TIME), meta_bytes)
    return buffer.getvalue()


@dataclass(frozen=True)
class EncodedFrames:
    """A pack's frames still JPEG-encoded: the GPU decodes them faster than the CPU can."""

    jpegs: list[bytes]
    height: int
    width: int
    meta: dict[str, Any]


def read_frame_pack(data: bytes) -> EncodedFrames:
    """The pack's JPEG frames and meta, checked but not decoded; FramePackError if damaged."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as pack:
            header = json.loads(pack.read(META_NAME))
            if header.get("format") != PACK_FORMAT:
                raise FramePackError(f"unsupported frame pack format {header.get('format')!r}")
            count, height, width = header["frames"], header["height"], header["width"]
            # Check before allocating: a damaged header must not ask for gigabytes.
            if not all(isinstance(v, int) and 0 < v <= _MAX_DIM for v in (count, height, width)):
                raise FramePackError(f"implausible frame pack shape {(count, height, width)}")
            jpegs = [pack.read(f"{i:04d}.jpg") for i in range(count)]
            return EncodedFrames(jpegs=jpegs, height=height, width=width, meta=header["meta"])
    except FramePackError:
        raise
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError, OSError, EOFError) as exc:
        raise FramePackError(f"corrupt frame pack: {type(exc).__name__}: {exc}") from exc


def unpack_frames(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """The frames (uint8 [n, h, w, 3]) and meta dict of a pack; FramePackError if it is damaged."""
    encoded = read_frame_pack(data)
    frames = np.empty((len(encoded.jpegs), encoded.height, encoded.width, 3), dtype=np.uint8)
    try:
        for i, jpeg in enumerate(encoded.jpegs):
            with Image.open(io.BytesIO(jpeg)) as image:
                frame = np.asarray(image.convert("RGB"))
            if frame.shape != frames.shape[1:]:
                raise FramePackError(f"frame {i} is {frame.shape}, expected {frames.shape[1:]}")
            frames[i] = frame
    except FramePackError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        # UnidentifiedImageError is an OSError.
        raise FramePackError(f"corrupt frame pack: {type(exc).__name__}: {exc}") from exc
    return frames, encoded.meta
