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
        embeds = kwargs.get("inputs_embeds")
        if ids is None and embeds is None:
            return
        # Only the prefill carries the video (or, made on the host's answers, its embeddings);
        # later forwards extend the KV cache.
        if kwargs.get("pixel_values_videos") is None and ids is not None:
            self.steps += 1
            return
        self.prefills += 1
        self.prompt_tokens += prompt_tokens(kwargs.get("attention_mask"), ids, embeds)


def prompt_tokens(mask: Any, ids: Any, embeds: Any) -> int:
    """Real (unpadded) prompt tokens of a prefill: from its 2D mask, or, where the prefill
    got its causal mask ready made, from the last position's row of it (it sees every real
    token); no mask, no padding."""
    if isinstance(mask, dict):
        full = mask.get("full_attention")
        return int(full[:, 0, -1].sum()) if full is not None else int(embeds.shape[:2].numel())
    if mask is not None:
        return int(mask.sum())
    return int(ids.numel()) if ids is not None else int(embeds.shape[:2].numel())


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
    model_inputs = labeler._prepared(clips)  # what the decoder runs, host-made parts included
    mark()
    with torch.inference_mode():
        labeler.decoder._prefill(model_inputs)
        labeler.decoder.cache = None
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
