"""Constrained decoding on real tiny checkpoints (no mocks): the digit rules that keep frame
numbers in range, the answer's tokens, the KV-cache path against a full forward, and garbage
logits that still give valid answers."""

from pathlib import Path

import pytest
import torch
from labeler_clips import CLIPS, TAXONOMY, make_clip

from packsight.labels.prediction import ClipPrediction
from packsight.vlm.answer import HEAD, Answer, allowed_digits
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.parsing import OutputParseError, parse_prediction


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
        assert isinstance(prediction, ClipPrediction), prediction
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
            # mypy cannot type a lambda whose extra, defaulted parameter binds the loop's row.
            best = max(allowed, key=lambda t, row=row: row[t].item())  # type: ignore[misc]
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
