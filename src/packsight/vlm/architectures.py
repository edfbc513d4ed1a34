"""Random-weight checkpoints with the real dimensions of Qwen2-VL-2B and Qwen2.5-VL-3B.

Hub access is not available where we benchmark, yet speed and memory depend only on the shapes,
so a checkpoint with the published dimensions and random weights stands in for the real one.
The tokenizer and processor are tiny.py's (same special tokens and chat format, small BPE vocab);
the embedding and output head keep the real 151936 rows, so the per-token logits cost is real.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from packsight.vlm.loading import model_class
from packsight.vlm.tiny import (
    SPECIAL_TOKENS,
    Family,
    _build_processor,
    build_tiny_model,
    save_checkpoint,
    text_token_ids,
    vision_token_ids,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Size = Literal["real", "tiny"]
FAMILIES: tuple[Family, ...] = ("qwen2_vl", "qwen2_5_vl")
REAL_NAMES = {"qwen2_vl": "Qwen2-VL-2B-Instruct", "qwen2_5_vl": "Qwen2.5-VL-3B-Instruct"}
VOCAB = 151936

# Published ids of Qwen's special tokens, used when no tokenizer is given (e.g. to count params).
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}

# Text-model dimensions from the checkpoints' config.json files. head_dim is 128 in both, so
# mrope_section (temporal, height, width) sums to 64 = head_dim / 2.
_TEXT = {
    "qwen2_vl": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "max_window_layers": 28,
        "max_position_embeddings": 32768,
    },
    "qwen2_5_vl": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "max_window_layers": 70,
        "max_position_embeddings": 128000,
    },
}
_VISION = {
    "qwen2_vl": {
        "depth": 32,
        "embed_dim": 1280,
        "num_heads": 16,
        "mlp_ratio": 4,
        "hidden_size": 1536,  # the merger's output: the LM's hidden size
        "hidden_act": "quick_gelu",
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "qwen2_5_vl": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "hidden_act": "silu",
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
}


def _special_ids(tokenizer) -> dict[str, int]:
    if tokenizer is None:
        return QWEN_SPECIAL_IDS
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def real_size_config(family: Family, tokenizer=None):
    """The transformers config of the real 2B (qwen2_vl) or 3B (qwen2_5_vl) model.

    With `tokenizer`, the special-token ids are that tokenizer's (they must agree with the
    processor that inserts the video placeholders); without, they are Qwen's published ids.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: use 'qwen2_vl' or 'qwen2_5_vl'")
    ids = _special_ids(tokenizer)
    text = {
        **_TEXT[family],
        "vocab_size": VOCAB,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": [16, 24, 24],
        },
        **text_token_ids(ids),
    }
    special = vision_token_ids(ids)
    cls = Qwen2VLConfig if family == "qwen2_vl" else Qwen2_5_VLConfig
    return cls(
        text_config=text, vision_config=dict(_VISION[family]), tie_word_embeddings=True, **special
    )


def meta_model(
    family: Family, tokenizer=None, dtype: torch.dtype = torch.bfloat16
) -> PreTrainedModel:
    """The real-size model on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return model_class(family)._from_config(real_size_config(family, tokenizer), dtype=dtype)


@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int) -> None:
    # HF-style init (normal 0.02 matrices, unit norm scales, zero biases) done in one pass on the
    # target device; the default per-module inits on a CPU take minutes at this size.
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() >= 2:
            param.normal_(0.0, 0.02, generator=generator)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def build_random_model(
    out_dir: Path,
    *,
    family: Family,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 42,
    size: Size = "real",
) -> Path:
    """Save a random-weight model of the real size (or tiny.py's tiny one) with its processor."""
    from transformers.utils.logging import disable_progress_bar

    if size == "tiny":
        return build_tiny_model(out_dir, family=family, seed=seed)
    disable_progress_bar()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    processor = _build_processor(family)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Build on meta (no init cost), then allocate once on the target device and fill it there.
    model = meta_model(family, processor.tokenizer, dtype)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives the tied head its own storage; share it again
    _randomise(model, seed)
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    persistent = set(model.state_dict()) - params
    if persistent:
        # to_empty leaves buffers uninitialised; only non-persistent (recomputed) ones are safe.
        raise RuntimeError(f"unexpected persistent buffers would be saved as garbage: {persistent}")
    save_checkpoint(model, processor, out_dir)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out_dir


def _main() -> None:
    parser = argparse.ArgumentParser(description="Save a random-weight real-size Qwen-VL model.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--family", choices=FAMILIES, default="qwen2_vl")
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    args = parser.parse_args()
    start = time.perf_counter()
    build_random_model(args.out_dir, family=args.family, size=args.size)
    print(f"saved {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    _main()
