"""A clip as the labeler takes it (sampled frames, raw or still JPEG, and where they sit in the
clip window): the shape checks it must pass and the on-device decoding of its JPEGs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import torch

from packsight.video.framepack import EncodedFrames
from packsight.vlm.answer import DIGITS


@dataclass
class ClipInput:
    # uint8 [n, h, w, 3] (n even, 8 by default; h and w multiples of 28), or still JPEG-encoded
    # frames, which the labeler decodes on its own device in one call per batch.
    frames: np.ndarray | torch.Tensor | EncodedFrames
    clip_frame_count: int  # frames in the clip window, e.g. 125 for 5 s at 25 fps
    frame_indices: tuple[int, ...]  # positions of the sampled frames within the clip
    # Qwen2.5-VL places frames in absolute time; the sampled frame rate is derived from this.
    fps: float = 25.0


def check_clip(clip: ClipInput, *, frame_multiple: int, temporal_patch: int) -> None:
    """Raise ValueError unless the model can take the clip's frames as they are: no resize, so
    each side a multiple of `frame_multiple`, and a frame count of whole `temporal_patch`es."""
    frames = clip.frames
    if isinstance(frames, EncodedFrames):
        n, h, w = len(frames.jpegs), frames.height, frames.width
    else:
        uint8 = torch.uint8 if isinstance(frames, torch.Tensor) else np.uint8
        if frames.dtype != uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 [n, h, w, 3], got {frames.dtype} {tuple(frames.shape)}"
            )
        n, h, w, _ = frames.shape
    if n == 0 or n % temporal_patch:
        raise ValueError(
            f"the frame count must be a positive multiple of {temporal_patch}, got {n}"
        )
    if h % frame_multiple or w % frame_multiple:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {frame_multiple} per side")
    if len(clip.frame_indices) != n:
        raise ValueError(f"{n} frames but {len(clip.frame_indices)} frame_indices")
    if not 1 <= clip.clip_frame_count <= 10**DIGITS:
        raise ValueError(
            f"clip of {clip.clip_frame_count} frames: frame numbers must fit {DIGITS} digits"
        )


def decode_clips(clips: list[ClipInput], device: torch.device) -> list[ClipInput | Exception]:
    """Decode JPEG-encoded frames on `device` (nvJPEG on a GPU), all clips in one call; a clip
    whose JPEGs are damaged comes back as its error. A failure of the device (out of memory,
    or the GPU failing on frames the CPU decodes) raises `torch.OutOfMemoryError`: it is not
    a fact about the clip."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(group: list[ClipInput], device: torch.device = device) -> list[ClipInput]:
        # Only clips whose frames are still JPEG are handed in.
        packs = [cast(EncodedFrames, clip.frames) for clip in group]
        data = [
            torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)
            for pack in packs
            for jpeg in pack.jpegs
        ]
        if device.type == "cuda":
            # nvJPEG's hardware decoder writes its outputs without waiting for the stream they
            # were allocated on: a block freed there moments ago may still be read by queued
            # kernels. With nothing queued, no such block exists. (The labeler's helper thread
            # decodes on a stream of its own, so this waits for its own work only.)
            torch.cuda.current_stream(device).synchronize()
        images = iter(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        out = []
        for clip, pack in zip(group, packs, strict=True):
            frames = torch.stack([next(images) for _ in pack.jpegs]).permute(0, 2, 3, 1)
            if tuple(frames.shape[1:3]) != (pack.height, pack.width):
                raise ValueError(f"decoded frames are {tuple(frames.shape)}, pack says otherwise")
            out.append(replace(clip, frames=frames))
        return out

    encoded = [c for c in clips if isinstance(c.frames, EncodedFrames)]
    if not encoded:
        return list(clips)
    try:
        decoded = iter(decode(encoded))
        return [next(decoded) if isinstance(c.frames, EncodedFrames) else c for c in clips]
    except torch.OutOfMemoryError:
        raise  # a fact about the device, not about the clips
    except (RuntimeError, ValueError):
        pass  # find the damaged clip(s): decode one by one
    results: list[ClipInput | Exception] = []
    for clip in clips:
        try:
            results.append(decode([clip])[0] if isinstance(clip.frames, EncodedFrames) else clip)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:
            # The GPU decoder reports running out of memory as a plain RuntimeError: frames
            # are damaged only if the CPU cannot decode them either.
            if device.type == "cuda" and _decodes_on_cpu(decode, clip):
                raise torch.OutOfMemoryError(
                    f"the GPU could not decode JPEG frames that the CPU decodes: {exc}"
                ) from exc
            results.append(ValueError(f"damaged JPEG frames: {exc}"))
    return results


def _decodes_on_cpu(decode: Callable[..., object], clip: ClipInput) -> bool:
    try:
        decode([clip], torch.device("cpu"))
    except (RuntimeError, ValueError):
        return False
    return True
