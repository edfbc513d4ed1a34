"""Vision-tower attention as one SDPA call per segment length, not one call per frame.

The Qwen vision towers attend within segments (a frame pair, or a window of patches). With
transformers' "sdpa" they loop over the segments in Python: a batch of 64 clips is ~8,000
attention calls per forward. Segments mostly share one length, so stacking them into a batch
gives the same result in a call or two. transformers hands packed segment bounds
(`cu_seq_lens_q`) only to implementations whose name contains "flash", hence the name; this
is plain `torch.nn.functional.scaled_dot_product_attention`, no flash-attn package needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F

from packsight.vlm.transfer import longs

PACKED_SDPA = "packsight_flash_packed_sdpa"
# The same, reading the segment bounds from the device in every block: the eager reference.
PACKED_SDPA_EVERY_BLOCK = "packsight_flash_packed_sdpa_every_block"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    *,
    read: Callable[[torch.Tensor], list[int]] | None = None,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """query/key/value: [1, heads, tokens, dim], segments given by `cu_seq_lens_q`;
    returns [1, tokens, heads, dim] like the flash-attention integrations. `read` gets the
    bounds to the host (default: `segment_bounds`)."""
    if cu_seq_lens_q is None or attention_mask is not None:
        raise ValueError("packed_sdpa needs cu_seq_lens_q and no attention mask (vision tower)")
    q, k, v = query[0], key[0], value[0]  # [heads, tokens, dim]
    bounds = (read or segment_bounds)(cu_seq_lens_q)
    groups: dict[int, list[int]] = {}
    for start, end in pairwise(bounds):
        if end > start:
            groups.setdefault(end - start, []).append(start)
    out = torch.empty_like(q)
    for length, starts in groups.items():
        pick: slice | torch.Tensor
        if len(groups) == 1:
            # Contiguous equal segments: a view, no copies.
            pick = slice(bounds[0], bounds[-1])
        else:
            offsets = torch.arange(length, device=q.device)
            pick = (longs(starts, q.device)[:, None] + offsets).flatten()
        # [heads, n*len, dim] -> [n, heads, len, dim]
        q_n, k_n, v_n = (
            t[:, pick].unflatten(1, (len(starts), length)).transpose(0, 1) for t in (q, k, v)
        )
        attended = F.scaled_dot_product_attention(
            q_n, k_n, v_n, dropout_p=dropout if module.training else 0.0, scale=scaling
        ).transpose(0, 1)
        if isinstance(pick, slice):  # written in place: one copy, not two
            out[:, pick].unflatten(1, (len(starts), length)).copy_(attended)
        else:
            out[:, pick] = attended.flatten(1, 2)
    return out.transpose(0, 1).unsqueeze(0), None


def segment_bounds(cu_seq_lens: torch.Tensor) -> list[int]:
    """The bounds on the host, read from the device once per vision forward. Every block of
    the forward gets the same tensor, and each read makes the host wait until the GPU has run
    all it was given, then the GPU wait while the host queues the next block: once per forward
    (per tensor), not once per block (32 of them). Outside a tower's forward (hooks set by
    `use_packed_vision_attention`), every call reads."""
    kept: dict[int, tuple[torch.Tensor, list[int]]] | None = getattr(_forward, "bounds", None)
    if kept is None:
        return _read_bounds(cu_seq_lens)
    hit = kept.get(id(cu_seq_lens))
    if hit is not None and hit[0] is cu_seq_lens:
        return hit[1]
    bounds = _read_bounds(cu_seq_lens)
    kept[id(cu_seq_lens)] = (cu_seq_lens, bounds)
    return bounds


_forward = threading.local()  # the bounds read in the vision forward this thread is running


def known_bounds(pairs: list[tuple[torch.Tensor, list[int]]]) -> None:
    """Bounds the host already knows, for the next vision forward of this thread: that forward
    reads none of these tensors from the device. `forget_bounds` drops them if it never ran."""
    _forward.known = {id(tensor): (tensor, bounds) for tensor, bounds in pairs}


def forget_bounds() -> None:
    _forward.known = None


def _open_forward(*_: object) -> None:
    _forward.bounds = getattr(_forward, "known", None) or {}
    _forward.known = None


def _close_forward(*_: object) -> None:
    _forward.bounds = None


def _read_bounds(cu_seq_lens: torch.Tensor) -> list[int]:
    return cu_seq_lens.tolist()  # waits for the GPU


def _every_block(*args: object, **kwargs: object) -> tuple[torch.Tensor, None]:
    return packed_sdpa(*args, read=_read_bounds, **kwargs)  # type: ignore[arg-type]


def use_packed_vision_attention(model: torch.nn.Module, *, bounds_once: bool = True) -> None:
    """Switch a loaded Qwen2-VL / Qwen2.5-VL's vision tower to `packed_sdpa` (bounds read
    once per forward, or, with `bounds_once=False`, in every block).

    Set after loading: asked for at load time, a name with "flash" in it makes transformers
    look for a flash-attention kernel. The tower reads the name at every forward."""
    from transformers import AttentionInterface, PreTrainedModel

    # Kept out of torch.compile's graphs (compiled.py): it reads segment bounds on the
    # host, so a compiled tower breaks its graph here by design rather than by discovery.
    AttentionInterface.register(PACKED_SDPA, torch.compiler.disable(packed_sdpa))
    AttentionInterface.register(PACKED_SDPA_EVERY_BLOCK, torch.compiler.disable(_every_block))
    visual = model.get_submodule("model.visual")
    assert isinstance(visual, PreTrainedModel)  # the tower has a config of its own
    if not getattr(visual, "_packsight_bounds_hooks", False):
        visual.register_forward_pre_hook(_open_forward)
        visual.register_forward_hook(_close_forward, always_call=True)
        setattr(visual, "_packsight_bounds_hooks", True)  # noqa: B010  (not a Module attribute)
    name = PACKED_SDPA if bounds_once else PACKED_SDPA_EVERY_BLOCK
    visual.config._attn_implementation_internal = name


def read_bounds_once(model: torch.nn.Module, once: bool) -> None:
    """Where the vision tower (a PEFT-wrapped model's too) runs `packed_sdpa`: read its bounds
    once per forward, or, not `once`, in every block as the reference path does."""
    unwrap = getattr(model, "get_base_model", None)
    base = unwrap() if callable(unwrap) else model
    config = getattr(base.get_submodule("model.visual"), "config", None)
    if getattr(config, "_attn_implementation", None) in (PACKED_SDPA, PACKED_SDPA_EVERY_BLOCK):
        use_packed_vision_attention(base, bounds_once=once)
