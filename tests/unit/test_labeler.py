"""The labeler against real tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints (no mocks)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.answer import HEAD, Answer, allowed_digits
from packsight.vlm.labeler import ClipInput, Labeler, load_labeler
from packsight.vlm.parsing import ClipPrediction, OutputParseError, parse_prediction
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


def test_other_taxonomy_with_eleven_operations(labeler: Labeler) -> None:
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


def test_allowed_digits_keep_numbers_in_range() -> None:
    # First of three digits for 0..124: 0 or 1; then after "1", only 0..2 (100..129 -> <=124).
    assert allowed_digits(0, 2, 0, 124) == [True, True] + [False] * 8
    assert allowed_digits(1, 1, 0, 124) == [True, True, True] + [False] * 7
    assert allowed_digits(12, 0, 0, 124) == [True] * 5 + [False] * 5
    # An end frame at or after a start of 57 in a 60-frame clip: "05" then 7, 8, 9.
    assert allowed_digits(5, 0, 57, 59) == [False] * 7 + [True] * 3


def test_answer_tokens_spell_the_rendered_answer(labeler: Labeler) -> None:
    answer = Answer(operation=3, start_frame=7, end_frame=98, next_operation=4)
    tokens = labeler.answer_format.answer_token_ids(answer)
    text = HEAD + labeler.processor.tokenizer.decode(tokens)
    assert '"start_frame": 007' in text and '"end_frame": 098' in text
    parsed = parse_prediction(text, taxonomy=TAXONOMY, clip_frame_count=125, confidence=0.5)
    assert (parsed.dominant_operation, parsed.start_frame, parsed.end_frame) == ("Put Items", 7, 98)
    assert parsed.anticipated_next_operation == "Pack"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_cached_decoding_matches_a_full_forward(tiny_models: dict[str, Path], family: str) -> None:
    """The KV-cache path (chunks, hand-made M-RoPE positions, left padding) must take the
    decisions that one cache-free forward over prompt + answer would take."""
    labeler = load_labeler(
        model=str(tiny_models[family]), adapter=None, quantization="none", taxonomy=TAXONOMY
    )
    clips = [make_clip(5, 125), make_clip(6, 37)]
    predictions = labeler.predict(clips)
    fmt = labeler.answer_format
    for clip, prediction in zip(clips, predictions, strict=True):
        answer = Answer(
            TAXONOMY.index(prediction.dominant_operation),
            prediction.start_frame,
            prediction.end_frame,
            TAXONOMY.index(prediction.anticipated_next_operation),
        )
        inputs = labeler._inputs([clip])
        answer_ids = torch.tensor([fmt.answer_token_ids(answer)])
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], answer_ids], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        full["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(answer_ids)], dim=1
        )
        with torch.inference_mode():
            logits = labeler.model(**full).logits[0].float()
        prompt = inputs["input_ids"].shape[1]
        ids = full["input_ids"][0].tolist()
        # Every position whose next token was a decision: the code or digit chosen there must
        # be the cache-free forward's best allowed candidate too.
        decided = [
            prompt - 1,
            *[
                prompt + i - 1
                for i, token in enumerate(ids[prompt:])
                if token in fmt.digit_ids or token in fmt.code_ids
            ][1:],
        ]
        assert len(decided) == 1 + 3 + 3 + 1
        last = clip.clip_frame_count - 1
        ranges = [(0, last)] * 3 + [(answer.start_frame, last)] * 3
        number = 0
        for step, position in enumerate(decided):
            token = ids[position + 1]
            if step in (0, 7):
                allowed = fmt.code_ids
            else:
                low, high = ranges[step - 1]
                remaining = 3 - (step - 1) % 3 - 1
                number = 0 if remaining == 2 else number
                mask = allowed_digits(number, remaining, low, high)
                allowed = [t for t, ok in zip(fmt.digit_ids, mask, strict=True) if ok]
                number = number * 10 + fmt.digit_ids.index(token)
            row = logits[position]
            best = max(allowed, key=lambda t, row=row: row[t].item())
            assert token in allowed
            assert best == token or row[best] == row[token]
        first = torch.softmax(logits[prompt - 1, fmt.code_ids], dim=-1).max().item()
        assert prediction.confidence == pytest.approx(first, rel=1e-4)


def test_garbage_logits_still_give_valid_answers(tiny_models: dict[str, Path]) -> None:
    labeler = load_labeler(
        model=str(tiny_models["qwen2_vl"]), adapter=None, quantization="none", taxonomy=TAXONOMY
    )
    with torch.no_grad():
        labeler.model.lm_head.weight.fill_(float("nan"))  # tied: NaN logits everywhere
    for prediction, clip in zip(labeler.predict(CLIPS), CLIPS, strict=True):
        assert isinstance(prediction, ClipPrediction), prediction
        assert 0 <= prediction.start_frame <= prediction.end_frame < clip.clip_frame_count
        # No information at all: a uniform choice over the operations.
        assert prediction.confidence == pytest.approx(1 / len(TAXONOMY.operations))
    with torch.no_grad():
        labeler.model.lm_head.weight.copy_(torch.randn_like(labeler.model.lm_head.weight) * 1e30)
    for prediction, clip in zip(labeler.predict(CLIPS), CLIPS, strict=True):
        assert_valid_or_certain(prediction, clip)


def assert_valid_or_certain(prediction: ClipPrediction | OutputParseError, clip: ClipInput) -> None:
    assert isinstance(prediction, ClipPrediction), prediction
    assert 0 <= prediction.start_frame <= prediction.end_frame < clip.clip_frame_count
    assert 0.0 < prediction.confidence <= 1.0


class TightMemoryLabeler(Labeler):
    """A labeler on a device that fits at most `fits` clips at once: bigger batches raise
    the same error CUDA raises."""

    fits = 2
    batches: list[int]

    def _run(self, inputs, clips):  # type: ignore[no-untyped-def]
        self.batches.append(len(clips))
        if len(clips) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated device limit)")
        return super()._run(inputs, clips)


def tight_labeler(labeler: Labeler, *, batch_size: int) -> TightMemoryLabeler:
    """The shared tiny model behind a simulated small device."""
    tight = TightMemoryLabeler(
        model=labeler.model,
        processor=labeler.processor,
        taxonomy=TAXONOMY,
        device=labeler.device,
        model_version_name="tight",
        batch_size=batch_size,
    )
    tight.batches = []
    return tight


def test_out_of_memory_halves_the_batch_and_loses_nothing(labeler: Labeler) -> None:
    clips = [make_clip(seed, 125 if seed % 2 else 60) for seed in range(7)]
    expected = labeler.predict(clips)
    tight = tight_labeler(labeler, batch_size=8)
    results = tight.predict(clips)
    assert tight.batch_size == 2
    assert tight.batches == [7, 4, 2, 2, 2, 1]  # 8 -> 4 -> 2: pairs, then the last clip
    assert len(results) == len(clips)
    for got, want in zip(results, expected, strict=True):
        assert (got.dominant_operation, got.start_frame, got.end_frame) == (
            want.dominant_operation,
            want.start_frame,
            want.end_frame,
        )
    tight.fits = 0
    with pytest.raises(torch.OutOfMemoryError):
        tight.predict(clips[:1])
    assert tight.batch_size == 1


def test_stream_matches_predict_and_keeps_load_errors_in_place(labeler: Labeler) -> None:
    from packsight.video.framepack import FramePackError

    clips = [make_clip(seed, 125 if seed % 2 else 60) for seed in range(7)]
    expected = labeler.predict(clips)
    loaders = [lambda clip=clip: clip for clip in clips]
    loaders.insert(3, lambda: FramePackError("pack 3 is corrupt"))
    loaders.append(lambda: make_clip(99, 125, size=50))  # unusable frame size
    tight = tight_labeler(labeler, batch_size=4)
    tight.fits = 3  # the first batch of 4 runs out of memory
    results = tight.predict_stream(loaders)
    assert len(results) == len(loaders)
    assert isinstance(results[3], FramePackError)
    assert isinstance(results[-1], ValueError) and "multiple of 28" in str(results[-1])
    got = [r for i, r in enumerate(results) if i not in (3, len(loaders) - 1)]
    for prediction, want in zip(got, expected, strict=True):
        assert (prediction.dominant_operation, prediction.start_frame, prediction.end_frame) == (
            want.dominant_operation,
            want.start_frame,
            want.end_frame,
        )
    assert tight.batch_size == 2
    # Batch 1 holds 3 loadable clips (pack 3 failed) and fits; batch 2 (4 clips) runs out of
    # memory and is redone as two pairs.
    assert tight.batches == [3, 4, 2, 2]


def test_jpeg_encoded_frames_decode_on_the_device_and_damage_stays_local(labeler: Labeler) -> None:
    from packsight.video.framepack import pack_frames, read_frame_pack

    clips = [make_clip(seed, 125) for seed in range(3)]
    packs = [read_frame_pack(pack_frames(c.frames, meta={})) for c in clips]
    encoded = [
        ClipInput(p, c.clip_frame_count, c.frame_indices) for p, c in zip(packs, clips, strict=True)
    ]
    from_jpeg = labeler.predict(encoded)
    # Same answers as the frames decoded by Pillow (JPEG decoders agree to a grey level).
    from packsight.video.framepack import unpack_frames

    pillow = [
        ClipInput(
            unpack_frames(pack_frames(c.frames, meta={}))[0], c.clip_frame_count, c.frame_indices
        )
        for c in clips
    ]
    for a, b in zip(from_jpeg, labeler.predict(pillow), strict=True):
        assert a.dominant_operation == b.dominant_operation
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)

    damaged = packs[1].jpegs.copy()
    damaged[4] = damaged[4][:40]  # a truncated JPEG
    from dataclasses import replace as copy_with

    loaders = [
        lambda: encoded[0],
        lambda: ClipInput(copy_with(packs[1], jpegs=damaged), 125, clips[1].frame_indices),
        lambda: encoded[2],
    ]
    results = labeler.predict_stream(loaders)
    assert isinstance(results[1], ValueError) and "damaged JPEG" in str(results[1])
    assert isinstance(results[0], ClipPrediction) and isinstance(results[2], ClipPrediction)


def test_device_digit_mask_matches_the_reference_rule() -> None:
    from packsight.vlm.decoding import allowed_digit_mask

    cases = [(p, r, lo, hi) for p in (0, 1, 5, 12) for r in (0, 1, 2) for lo, hi in
             ((0, 124), (57, 59), (0, 0), (99, 186), (7, 7))]  # fmt: skip
    for prefix, remaining, low, high in cases:
        one = allowed_digit_mask(
            torch.tensor([prefix]), remaining, torch.tensor([low]), torch.tensor([high])
        )
        assert one[0].tolist() == allowed_digits(prefix, remaining, low, high)


def test_decision_positions_point_at_the_decided_tokens(labeler: Labeler) -> None:
    fmt = labeler.answer_format
    tokens = fmt.answer_token_ids(
        Answer(operation=2, start_frame=7, end_frame=98, next_operation=5)
    )
    decided = [tokens[i] for i in fmt.decision_positions()]
    assert decided == [fmt.code_ids[2], *fmt.digits_of(7), *fmt.digits_of(98), fmt.code_ids[5]]
