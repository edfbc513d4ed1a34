"""Real-size Qwen2-VL-2B / Qwen2.5-VL-3B configs: published dimensions, parameter counts.

Models are built on the meta device only (shapes, no memory), so this stays fast.
"""

import pytest
import torch

from packsight.vlm.architectures import QWEN_SPECIAL_IDS, meta_model, real_size_config
from packsight.vlm.tiny import Family, _build_processor

# Published totals: Qwen2-VL-2B 2.21B, Qwen2.5-VL-3B 3.75B (tied embeddings counted once).
EXPECTED_PARAMS = {"qwen2_vl": (2.20e9, 2.22e9), "qwen2_5_vl": (3.74e9, 3.76e9)}
VISION_PARAMS = (0.66e9, 0.675e9)


def test_qwen2_vl_2b_dimensions() -> None:
    config = real_size_config("qwen2_vl")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (1536, 28, 8960)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (12, 2, 151936)
    assert text.rope_parameters["rope_theta"] == 1e6
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.mlp_ratio) == (32, 1280, 16, 4)
    assert (vision.hidden_size, vision.patch_size) == (1536, 14)
    assert (vision.spatial_merge_size, vision.temporal_patch_size) == (2, 2)
    assert config.tie_word_embeddings


def test_qwen2_5_vl_3b_dimensions() -> None:
    config = real_size_config("qwen2_5_vl")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (2048, 36, 11008)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (16, 2, 151936)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.intermediate_size) == (32, 1280, 3420)
    assert (vision.num_heads, vision.out_hidden_size, vision.window_size) == (16, 2048, 112)
    assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31]
    assert (vision.tokens_per_second, vision.patch_size) == (2, 14)
    assert (vision.spatial_merge_size, vision.temporal_patch_size) == (2, 2)
    assert config.tie_word_embeddings


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_parameter_counts_match_the_published_models(family: Family) -> None:
    model = meta_model(family)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    low, high = EXPECTED_PARAMS[family]
    assert low <= total <= high, total
    assert VISION_PARAMS[0] <= vision <= VISION_PARAMS[1], vision
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    text = model.config.text_config
    # M-RoPE splits each head's rotary half into temporal/height/width sections.
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2 == 64


def test_special_token_ids_default_to_qwens_and_follow_a_given_tokenizer() -> None:
    assert real_size_config("qwen2_vl").video_token_id == QWEN_SPECIAL_IDS["<|video_pad|>"]
    tokenizer = _build_processor("qwen2_vl").tokenizer
    config = real_size_config("qwen2_vl", tokenizer)
    for field, token in (
        ("video_token_id", "<|video_pad|>"),
        ("image_token_id", "<|image_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ):
        assert getattr(config, field) == tokenizer.convert_tokens_to_ids(token)
    assert config.text_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config.text_config.vocab_size == 151936 > len(tokenizer)


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        real_size_config("qwen2_5_vl_7b")  # type: ignore[arg-type]
