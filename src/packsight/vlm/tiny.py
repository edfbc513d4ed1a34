"""A tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoint, built offline, for tests and demos.

It has the real architecture, processor and chat format, so every code path that serves the
2B/3B models runs against it in a second on a CPU; only the weights are meaningless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from packsight.labels.taxonomy import builtin_taxonomies, load_taxonomy

Family = Literal["qwen2_vl", "qwen2_5_vl"]

# Qwen's pre-tokenizer: among other things it splits every digit into its own token, which the
# labeler's number grammar relies on.
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The same shape as Qwen's own template: a default system turn, image/video placeholders
# inside user turns, and "<|im_start|>assistant\n" as the generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyDims:
    """The shapes and weight init of a tiny checkpoint: language model, then vision tower."""

    hidden: int = 64
    intermediate: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_depth: int = 2
    vision_embed: int = 32
    vision_heads: int = 2
    vision_mlp_ratio: int = 2
    # Weight init std of the language model and the vision tower. transformers' 0.02 suits
    # widths in the thousands; at width 64 the video barely moves the answer position's state.
    init_std: float = 0.02
    vision_init_std: float = 0.02

    def mrope_section(self) -> list[int]:
        """(temporal, height, width) rotary sections summing to head_dim / 2, split 2:3:3."""
        half = self.hidden // self.heads // 2
        temporal = half // 4
        height = (half - temporal) // 2
        return [temporal, height, half - temporal - height]


Size = Literal["default", "learnable"]
SIZES: dict[str, TinyDims] = {
    # The smallest and fastest. With the 0.02 init the state that predicts the operation varies
    # by only ~0.10 of its norm from clip to clip, so it learns the synthetic operations slowly.
    "default": TinyDims(),
    # The same shapes with ~1/sqrt(width) init: that spread grows to ~0.25 and fine-tuning with
    # packsight.training.recipes.TINY_RECIPE beats the base model on OCA, tIoU@0.5 and AA@1.
    "learnable": TinyDims(init_std=0.125, vision_init_std=0.1),
}


def _corpus() -> list[str]:
    """Text the tiny tokenizer learns merges from: the prompt and answer vocabulary."""
    lines = [
        "You are a helpful assistant.",
        "Which packaging operation dominates this clip? Answer with JSON only.",
        "The video shows clip frames 0, 17, 35, 53, 71, 89, 107 and 124 of 125.",
        '{"dominant_operation": "Tape", "temporal_segment": {"start_frame": 14, '
        '"end_frame": 98}, "anticipated_next_operation": "Put Items", "confidence": 0.87}',
        " ".join(str(i) for i in range(200)),
    ]
    for name in builtin_taxonomies():
        ops = load_taxonomy(name).operations
        lines.append("Operations: " + ", ".join(ops) + ".")
        lines.extend(
            f'"dominant_operation": "{op}", "anticipated_next_operation": "{op}"' for op in ops
        )
    return lines * 4


def _train_tokenizer(vocab_size: int = 700) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    data = json.loads(tok.to_str())
    merges: list[tuple[str, str]] = []
    for merge in data["model"]["merges"]:  # "a b" (older tokenizers) or ["a", "b"]
        first, second = merge.split(" ") if isinstance(merge, str) else merge
        merges.append((first, second))
    return data["model"]["vocab"], merges


def _build_processor(family: Family):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

    # `transformers.Qwen2VLVideoProcessor`, imported from its own module: the package's
    # type-checking imports leave it out.
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    vocab, merges = _train_tokenizer()
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        # Pairs, as tokenizers' BPE takes them; transformers annotates only "a b" strings.
        merges=merges,  # type: ignore[arg-type]
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")
        ],
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    # Small pixel limits keep tests cheap; the labeler never resizes anyway.
    pixels = {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 64}
    image_processor = Qwen2VLImageProcessor(**pixels)
    video_processor = Qwen2VLVideoProcessor(**pixels)
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def text_token_ids(ids: dict[str, int]) -> dict[str, int]:
    """The language model's begin/end/pad ids in a tokenizer with the Qwen special tokens."""
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


class VisionTokenIds(TypedDict):
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


def vision_token_ids(ids: dict[str, int]) -> VisionTokenIds:
    """The placeholder ids the model config must share with the tokenizer."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _build_config(family: Family, tokenizer, dims: TinyDims):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": dims.hidden,
        "intermediate_size": dims.intermediate,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "max_position_embeddings": 4096,
        "initializer_range": dims.init_std,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": dims.mrope_section(),
        },
        **text_token_ids(ids),
    }
    special = vision_token_ids(ids)
    vision: dict[str, object]
    if family == "qwen2_vl":
        vision = {
            "depth": dims.vision_depth,
            "embed_dim": dims.vision_embed,
            "hidden_size": dims.hidden,
            "num_heads": dims.vision_heads,
            "mlp_ratio": dims.vision_mlp_ratio,
            "initializer_range": dims.vision_init_std,
        }
        return Qwen2VLConfig(text_config=text, vision_config=vision, **special)
    vision = {
        "depth": dims.vision_depth,
        "hidden_size": dims.vision_embed,
        "intermediate_size": dims.vision_embed * dims.vision_mlp_ratio,
        "out_hidden_size": dims.hidden,
        "num_heads": dims.vision_heads,
        "window_size": 56,
        "fullatt_block_indexes": [dims.vision_depth - 1],
        "initializer_range": dims.vision_init_std,
    }
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)


def build_tiny_model(
    out_dir: Path,
    *,
    family: Family = "qwen2_vl",
    seed: int = 42,
    size: Size | TinyDims = "default",
) -> Path:
    """Build and save a tiny random-weight model plus processor; return `out_dir`.

    size="learnable" (same shapes, wider init) is the one fine-tuning can teach the synthetic
    operations (see TINY_RECIPE); a TinyDims sets every shape and init by hand.
    """
    from transformers.utils.logging import disable_progress_bar

    from packsight.vlm.loading import model_class

    # Per-shard progress bars are noise in worker logs and CLI output.
    disable_progress_bar()
    if family not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"unknown model family {family!r}: use 'qwen2_vl' or 'qwen2_5_vl'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(size, TinyDims):
        dims = size
    elif size in SIZES:
        dims = SIZES[size]
    else:
        raise ValueError(f"unknown tiny model size {size!r}: use one of {', '.join(SIZES)}")
    processor = _build_processor(family)
    config = _build_config(family, processor.tokenizer, dims)
    torch.manual_seed(seed)
    model = model_class(family)(config).eval()
    return save_checkpoint(model, processor, out_dir)


def save_checkpoint(model, processor, out_dir: Path) -> Path:
    """Save a model with a greedy generation config next to its processor."""
    from transformers import GenerationConfig

    text = model.config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
