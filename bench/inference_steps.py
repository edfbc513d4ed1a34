"""Pieces of the inference benchmark's phases: a counter of the model's forwards, the loader a
GPU task uses per clip, and the step-by-step timing of one batch of the system path."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch

from bench.clip_shape import CLIP_FRAME_COUNT
from bench.machine import sync
from packsight.video.framepack import read_frame_pack
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import Labeler


class ForwardCounter:
    """Counts the model's forward passes and prompt tokens, whichever decoding loop drives them."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.prefills = self.steps = self.prompt_tokens = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        # Only the prefill carries the video; later forwards extend the KV cache.
        if kwargs.get("pixel_values_videos") is None:
            self.steps += 1
            return
        mask = kwargs.get("attention_mask")
        self.prefills += 1
        self.prompt_tokens += int(mask.sum()) if mask is not None else ids.numel()


def unpacked(pack: bytes) -> Callable[[], ClipInput]:
    """A loader like the GPU task's: unpack one stored frame pack into a ClipInput."""

    def load() -> ClipInput:
        encoded = read_frame_pack(pack)  # decoded by the labeler, on the GPU, per batch
        return ClipInput(encoded, CLIP_FRAME_COUNT, tuple(encoded.meta["frame_indices"]))

    return load


def breakdown(labeler: Labeler, inputs: Any, batch: int) -> dict[str, float]:
    """Seconds of one batch spent in each step of the system path (synchronised)."""
    device = labeler.device
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())

    clips, _ = inputs(0, batch)
    mark()
    model_inputs = labeler._inputs(clips)
    mark()
    with torch.inference_mode():
        labeler.model(**model_inputs, use_cache=True, logits_to_keep=1)
    mark()
    labeler.decoder.decode(model_inputs, [c.clip_frame_count for c in clips])
    mark()
    unpack, preprocess, prefill, decode = (b - a for a, b in pairwise(marks))
    return {
        "unpack": unpack,
        "preprocess": preprocess,
        "prefill": prefill,
        "decisions": decode - prefill,  # decode() repeats the prefill, then 7 small forwards
    }
