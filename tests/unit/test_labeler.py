"""The labeler against real tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints (no mocks)."""

from pathlib import Path

import numpy as np
import pytest

from packsight.parsing import ClipPrediction, OutputParseError, parse_prediction
from packsight.taxonomy import load_taxonomy
from packsight.vlm.grammar import AnswerGrammar, _number_prefix_ok
from packsight.vlm.labeler import ClipInput, Labeler, load_labeler
from packsight.vlm.tiny import build_tiny_model

TAXONOMY = load_taxonomy("assignment")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_model(root / f, family=f) for f in ("qwen2_vl", "qwen2_5_vl")}


@pytest.fixture(scope="module")
def labeler(tiny_models: dict[str, Path]) -> Labeler:
    return load_labeler(
        model=str(tiny_models["qwen2_vl"]), adapter=None, quantization="none", taxonomy=TAXONOMY
    )


def make_clip(seed: int, clip_frame_count: int, n: int = 8, size: int = 56) -> ClipInput:
    frames = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    indices = tuple(round(i * (clip_frame_count - 1) / (n - 1)) for i in range(n))
    return ClipInput(frames=frames, clip_frame_count=clip_frame_count, frame_indices=indices)


CLIPS = [make_clip(1, 125), make_clip(2, 60), make_clip(3, 125)]


def assert_valid(prediction: ClipPrediction | OutputParseError, clip: ClipInput) -> None:
    assert isinstance(prediction, ClipPrediction), prediction
    assert prediction.dominant_operation in TAXONOMY.operations
    assert prediction.anticipated_next_operation in TAXONOMY.operations
    assert 0 <= prediction.start_frame <= prediction.end_frame < clip.clip_frame_count
    assert isinstance(prediction.confidence, float) and 0.0 < prediction.confidence < 1.0
    # The raw text is the answer JSON itself, valid on its own.
    reparsed = parse_prediction(
        prediction.raw_output,
        taxonomy=TAXONOMY,
        clip_frame_count=clip.clip_frame_count,
        confidence=prediction.confidence,
    )
    assert reparsed == prediction


def test_batch_of_clips_with_different_lengths_gives_valid_predictions(labeler: Labeler) -> None:
    predictions = labeler.predict(CLIPS)
    assert len(predictions) == len(CLIPS)
    for prediction, clip in zip(predictions, CLIPS, strict=True):
        assert_valid(prediction, clip)


def test_confidence_comes_from_the_model(labeler: Labeler) -> None:
    confidences = [p.confidence for p in labeler.predict(CLIPS)]
    assert len(set(confidences)) == len(confidences)  # different frames, different probabilities


def test_batched_predictions_equal_one_by_one(labeler: Labeler) -> None:
    batched = labeler.predict(CLIPS)
    for prediction, clip in zip(batched, CLIPS, strict=True):
        alone = labeler.predict([clip])[0]
        assert (alone.dominant_operation, alone.start_frame, alone.end_frame) == (
            prediction.dominant_operation,
            prediction.start_frame,
            prediction.end_frame,
        )
        assert alone.anticipated_next_operation == prediction.anticipated_next_operation
        assert alone.confidence == pytest.approx(prediction.confidence, rel=1e-4)


def test_records_model_version_name(labeler: Labeler, tiny_models: dict[str, Path]) -> None:
    assert labeler.model_version_name == f"{tiny_models['qwen2_vl']}@base:none"


def test_empty_batch_and_bad_frames(labeler: Labeler) -> None:
    assert labeler.predict([]) == []
    with pytest.raises(ValueError, match="multiple of 28"):
        labeler.predict([make_clip(1, 125, size=50)])
    with pytest.raises(ValueError, match="multiple of 2"):
        labeler.predict([make_clip(1, 125, n=7)])


def test_other_taxonomy_with_shared_name_prefixes(labeler: Labeler) -> None:
    openpack = load_taxonomy("openpack")
    other = Labeler(
        model=labeler.model,
        processor=labeler.processor,
        taxonomy=openpack,
        device=labeler.device,
        model_version_name="tiny",
    )
    for prediction in other.predict(CLIPS[:2]):
        assert isinstance(prediction, ClipPrediction)
        assert prediction.dominant_operation in openpack.operations


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_qwen2_5_vl_loads_and_predicts(tiny_models: dict[str, Path], quantization: str) -> None:
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
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")

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
    base_confidences = [p.confidence for p in labeler.predict(CLIPS)]
    assert [p.confidence for p in predictions] != base_confidences


def test_unconstrained_random_weights_give_errors_not_exceptions(labeler: Labeler) -> None:
    labeler.constrained = False
    try:
        results = labeler.predict(CLIPS)
    finally:
        labeler.constrained = True
    assert len(results) == len(CLIPS)
    assert all(isinstance(r, OutputParseError) and r.raw_output for r in results)


def test_tiny_model_is_deterministic(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    again = build_tiny_model(tmp_path / "again", family="qwen2_vl", seed=42)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_models["qwen2_vl"] / name).read_bytes()


def test_number_prefixes() -> None:
    assert _number_prefix_ok("1", 0, 124) and _number_prefix_ok("124", 0, 124)
    assert not _number_prefix_ok("125", 0, 124)
    assert _number_prefix_ok("1", 100, 124) and not _number_prefix_ok("2", 100, 124)
    assert not _number_prefix_ok("2", 30, 124) and _number_prefix_ok("3", 30, 124)  # 2, 20-29
    assert _number_prefix_ok("0", 0, 5) and not _number_prefix_ok("0", 1, 5)
    assert not _number_prefix_ok("01", 0, 124)
    assert _number_prefix_ok("5", 50, 59) and not _number_prefix_ok("6", 50, 59)


def test_grammar_accepts_exactly_the_template(labeler: Labeler) -> None:
    tokenizer = labeler.processor.tokenizer
    eos = labeler.eos_token_id
    grammar = AnswerGrammar(tokenizer=tokenizer, taxonomy=TAXONOMY, eos_token_id=eos)
    text = (
        '{"dominant_operation": "Put Items", "temporal_segment": {"start_frame": 7, '
        '"end_frame": 59}, "anticipated_next_operation": "Pack"}'
    )
    tokens = [*tokenizer.encode(text, add_special_tokens=False), eos]
    state, holes = grammar.walk(tokens, 60)
    assert grammar.allowed(state, 60) == []  # complete
    assert state.numbers == {"start": 7, "end": 59}
    assert "dominant" in holes and "next" in holes
    assert len(tokens) <= grammar.max_tokens(60)
    # After start 7 in a 60-frame clip, end may start with 7, 8, 9 (one digit) or 1..5 (two).
    prefix = tokenizer.encode(text[: text.index("59")], add_special_tokens=False)
    state, _ = grammar.walk(prefix, 60)
    digits = sorted(tokenizer.decode([t]) for t in grammar.allowed(state, 60))
    assert digits == ["1", "2", "3", "4", "5", "7", "8", "9"]
