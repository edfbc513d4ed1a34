"""The prompt's forward (the prefill) with nothing read back from the GPU on the way.

The model's own forward reads GPU values on the host several times a batch, and each read
makes the host wait until the GPU has run everything it was given, after which the GPU idles
until the host queues more:
- the vision tower derives its rotary positions, segment bounds and (Qwen2.5-VL) window
  order from the frame grid, in Python loops over the clips (one read per clip for the
  windows);
- the split of its output per video reads the grid;
- the merge of the video features into the prompt checks the count of video tokens;
- the attention mask asks whether any prompt token is padding.
Each is a function of tensors the host holds before the batch goes to the GPU. Here the host
computes them while the previous batch runs (`host_vision`, with transformers' own
functions), and hands them to the tower through its keyword arguments for precomputed inputs.
The merge and the mask are the model's own calls given the host's answers (`prefill`). The
same kernels on the same values give the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from packsight.vlm.transfer import send

# The labeler's key for a batch's `HostVision` beside the processor's output.
HOST_VISION = "packsight_host_vision"

# The towers whose forwards take exactly these precomputed inputs (transformers 5).
_TOWERS = {
    "Qwen2VisionTransformerPretrainedModel": False,
    "Qwen2_5_VisionTransformerPretrainedModel": True,  # also attends within windows
}


@dataclass
class HostVision:
    """What the prefill would otherwise read from the GPU, made on the host."""

    grid: torch.Tensor  # video_grid_thw, kept on the host: the split per video reads it
    tower: dict[str, torch.Tensor | int | None]  # the tower's precomputed inputs, by keyword
    bounds: dict[str, list[int]] = field(default_factory=dict)  # segment bounds, by keyword
    padded: bool = True  # whether any prompt token is padding

    def to(self, device: torch.device) -> HostVision:
        """The tensors on `device`, sent without waiting for the GPU's queue (pinned memory)."""

        tower = {
            name: send(value, device) if isinstance(value, torch.Tensor) else value
            for name, value in self.tower.items()
        }
        return replace(self, tower=tower)


def _base(model: Any) -> Any:
    unwrap = getattr(model, "get_base_model", None)
    return unwrap() if callable(unwrap) else model


def host_vision(model: Any, features) -> HostVision | None:
    """The batch's `HostVision`, from the processor's host tensors; None for a model or a
    batch this does not cover (another tower, images, sliding-window layers)."""
    from transformers.utils.generic import get_max_seqlen
    from transformers.vision_utils import (
        get_vision_attention_seqlens,
        get_vision_position_ids,
        get_vision_window_index,
    )

    vlm = _base(model).model
    visual = vlm.visual
    windows = _TOWERS.get(type(visual).__name__)
    text_layers = set(getattr(vlm.language_model.config, "layer_types", ["full_attention"]))
    grid = features.get("video_grid_thw")
    if windows is None or grid is None or "pixel_values" in features:
        return None
    if text_layers != {"full_attention"}:
        return None
    grid = grid.cpu()
    merge = visual.spatial_merge_size
    cu_seqlens, longest = get_vision_attention_seqlens(grid, visual.config)
    tower: dict[str, torch.Tensor | int | None] = {
        "position_ids": get_vision_position_ids(grid, merge),
        "cu_seqlens": cu_seqlens,
        "max_seqlen": longest,
    }
    bounds = {"cu_seqlens": cu_seqlens.tolist()}
    if windows:
        index, cu_windows = get_vision_window_index(
            grid,
            spatial_merge_size=merge,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        tower["window_index"], tower["cu_window_seqlens"] = index, cu_windows
        tower["max_window_seqlen"] = get_max_seqlen(
            cu_windows, visual.config, kwarg_name="max_window_seqlen"
        )
        bounds["cu_window_seqlens"] = cu_windows.tolist()
    ids = features["input_ids"].cpu()
    tokens = int((ids == vlm.config.video_token_id).sum())
    merged = int((grid.prod(-1) // merge**2).sum())
    if tokens != merged:
        raise ValueError(f"video features and video tokens do not match: {merged} vs {tokens}")
    padded = not bool(features["attention_mask"].cpu().all())
    return HostVision(grid=grid, tower=tower, bounds=bounds, padded=padded)


def prefill(model: Any, inputs: dict, host: HostVision):
    """The model's forward over the prompt, as `model(**inputs, use_cache=True,
    logits_to_keep=1)` computes it, with `host` (on the inputs' device) for what it would
    read from the GPU. `inputs` must hold the host-made `position_ids`."""
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask

    from packsight.vlm.attention import forget_bounds, known_bounds

    vlm = _base(model).model
    ids = inputs["input_ids"]
    embeds = vlm.get_input_embeddings()(ids)
    known_bounds([(host.tower[name], values) for name, values in host.bounds.items()])  # type: ignore[misc]
    try:
        video = vlm.get_video_features(
            inputs["pixel_values_videos"],
            host.grid,
            **{f"video_{name}": value for name, value in host.tower.items()},
        ).pooler_output
    finally:
        forget_bounds()
    video = torch.cat(video, dim=0).to(embeds.device, embeds.dtype)
    where = (ids == vlm.config.video_token_id).unsqueeze(-1).to(embeds.device)
    embeds = embeds.masked_scatter(where, video)
    text = vlm.language_model
    cache = DynamicCache(config=text.config)
    # Without padding the model's own check finds none and lets SDPA skip the mask; with
    # padding it cannot skip, so it is not asked to look.
    mask = create_causal_mask(
        config=text.config,
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"] if host.padded else None,
        past_key_values=cache,
        position_ids=None,  # 3D M-RoPE positions: the text model passes none either
        allow_is_causal_skip=not host.padded,
    )
    return model(
        inputs_embeds=embeds,
        attention_mask={"full_attention": mask},
        position_ids=inputs["position_ids"],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
