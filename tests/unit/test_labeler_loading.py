"""Loading the labeler's model (no mocks): both families, NF4 quantization, a LoRA adapter from a
local folder, and the tiny test checkpoints themselves."""

from pathlib import Path

import pytest
from labeler_clips import CLIPS, TAXONOMY, assert_valid, predicted

from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.loading import Quantization
from packsight.vlm.tiny import build_tiny_model


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_qwen2_5_vl_loads_and_predicts(
    tiny_models: dict[str, Path], quantization: Quantization
) -> None:
    labeler = load_labeler(
        model=str(tiny_models["qwen2_5_vl"]),
        adapter=None,
        quantization=quantization,
        taxonomy=TAXONOMY,
    )
    for prediction, clip in zip(labeler.predict(CLIPS), CLIPS, strict=True):
        assert_valid(prediction, clip)


def test_nf4_quantizes_the_language_model_only_and_predicts(tiny_models: dict[str, Path]) -> None:
    from bitsandbytes.nn import Linear4bit

    labeler = load_labeler(
        model=str(tiny_models["qwen2_vl"]), adapter=None, quantization="nf4", taxonomy=TAXONOMY
    )
    modules = dict(labeler.model.named_modules())
    quantized = [name for name, module in modules.items() if isinstance(module, Linear4bit)]
    assert quantized and all(name.startswith("model.language_model.") for name in quantized)
    assert labeler.model_version_name.endswith("@base:nf4")
    for prediction, clip in zip(labeler.predict(CLIPS), CLIPS, strict=True):
        assert_valid(prediction, clip)


def test_lora_adapter_loads_from_a_local_path(
    tiny_models: dict[str, Path], tmp_path: Path, labeler: Labeler
) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    base = Qwen2VLForConditionalGeneration.from_pretrained(tiny_models["qwen2_vl"])
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        init_lora_weights=False,  # random B, so the adapter visibly changes the outputs
    )
    get_peft_model(base, config).save_pretrained(str(tmp_path / "adapter"))

    adapted = load_labeler(
        model=str(tiny_models["qwen2_vl"]),
        adapter=str(tmp_path / "adapter"),
        quantization="none",
        taxonomy=TAXONOMY,
    )
    assert isinstance(adapted.model, PeftModel)
    assert adapted.model_version_name.endswith(f"@{tmp_path / 'adapter'}:none")
    predictions = adapted.predict(CLIPS)
    for prediction, clip in zip(predictions, CLIPS, strict=True):
        assert_valid(prediction, clip)
    base_confidences = [predicted(p).confidence for p in labeler.predict(CLIPS)]
    assert [predicted(p).confidence for p in predictions] != base_confidences


def test_tiny_model_is_deterministic(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    again = build_tiny_model(tmp_path / "again", family="qwen2_vl", seed=42)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_models["qwen2_vl"] / name).read_bytes()
