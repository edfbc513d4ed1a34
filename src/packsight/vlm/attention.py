"""Vision-tower attention as one SDPA call per segment length, not one call per frame.

The Qwen vision towers attend within segments (a frame pair, or a window of patches). With
transformers' "sdpa" they loop over the segments in Python: a batch of 64 clips is ~8,000
attention calls per forward. Segments mostly share one length, so stacking them into a batch
gives the same result in a call or two. transformers hands packed segment bounds
(`cu_seq_lens_q`) only to implementations whose name contains "flash", hence the name; this
is plain `torch.nn.functional.scaled_dot_product_attention`, no flash-attn package needed.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F

PACKED_SDPA = "packsight_flash_packed_sdpa"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """query/key/value: [1, heads, tokens, dim], segments given by `cu_seq_lens_q`;
    returns [1, tokens, heads, dim] like the flash-attention integrations."""
    if cu_seq_lens_q is None or attention_mask is not None:
        raise ValueError("packed_sdpa needs cu_seq_lens_q and no attention mask (vision tower)")
    q, k, v = query[0], key[0], value[0]  # [heads, tokens, dim]
    bounds = cu_seq_lens_q.tolist()
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
            pick = (torch.tensor(starts, device=q.device)[:, None] + offsets).flatten()
        # [heads, n*len, dim] -> [n, heads, len, dim]
        q_n, k_n, v_n = (
            t[:, pick].unflatten(1, (len(starts), length)).transpose(0, 1) for t in (q, k, v)
        )
        attended = F.scaled_dot_product_attention(
            q_n, k_n, v_n, dropout_p=dropout if module.training else 0.0, scale=scaling
        )
        out[:, pick] = attended.transpose(0, 1).flatten(1, 2)
    return out.transpose(0, 1).unsqueeze(0), None


def use_packed_vision_attention(model: torch.nn.Module) -> None:
    """Switch a loaded Qwen2-VL / Qwen2.5-VL's vision tower to `packed_sdpa`.

    Set after loading: asked for at load time, a name with "flash" in it makes transformers
    look for a flash-attention kernel. The tower reads the name at every forward."""
    from transformers import AttentionInterface, PreTrainedModel

    # Kept out of torch.compile's graphs (compiled.py): it reads segment bounds on the
    # host, so a compiled tower breaks its graph here by design rather than by discovery.
    AttentionInterface.register(PACKED_SDPA, torch.compiler.disable(packed_sdpa))
    visual = model.get_submodule("model.visual")
    assert isinstance(visual, PreTrainedModel)  # the tower has a config of its own
    visual.config._attn_implementation_internal = PACKED_SDPA
