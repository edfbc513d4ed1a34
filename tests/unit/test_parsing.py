import json

import pytest

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.parsing import OutputParseError, parse_prediction

TAXONOMY = load_taxonomy("assignment")
GOOD = {
    "dominant_operation": "Tape",
    "temporal_segment": {"start_frame": 14, "end_frame": 98},
    "anticipated_next_operation": "Put Items",
}


def parse(text: str, *, n: int = 125, confidence: float | None = 0.5) -> ClipPrediction:
    return parse_prediction(text, taxonomy=TAXONOMY, clip_frame_count=n, confidence=confidence)


def answer(**changes) -> str:
    return json.dumps({**GOOD, **changes})


def test_accepts_json_with_prose_and_code_fence_around_it() -> None:
    text = f"Sure! Here is the label:\n```json\n{answer()}\n```\nHope that helps {{:}}"
    prediction = parse(text)
    assert prediction == ClipPrediction("Tape", 14, 98, "Put Items", 0.5, raw_output=text)


def test_skips_unrelated_objects_before_the_answer() -> None:
    prediction = parse('{"note": 1} then {broken then ' + answer())
    assert prediction.dominant_operation == "Tape"


def test_operation_spelling_is_made_canonical() -> None:
    prediction = parse(answer(dominant_operation="put  items", anticipated_next_operation="TAPE"))
    assert (prediction.dominant_operation, prediction.anticipated_next_operation) == (
        "Put Items",
        "Tape",
    )


def test_to_json_has_exactly_the_challenge_fields() -> None:
    record = parse(answer(), confidence=0.87).to_json("U0108_S0500_t0035")
    assert record == {
        "clip_id": "U0108_S0500_t0035",
        "dominant_operation": "Tape",
        "temporal_segment": {"start_frame": 14, "end_frame": 98},
        "anticipated_next_operation": "Put Items",
        "confidence": 0.87,
    }


def test_confidence_argument_wins_over_the_models_own() -> None:
    assert parse(answer(confidence=0.9), confidence=0.25).confidence == 0.25
    assert parse(answer(confidence=0.9), confidence=None).confidence == 0.9


@pytest.mark.parametrize(
    ("text", "confidence", "message"),
    [
        (answer(dominant_operation="Dance"), 0.5, "dominant_operation 'Dance' is not an operation"),
        (answer(anticipated_next_operation=3), 0.5, "anticipated_next_operation 3 is not an"),
        (answer(temporal_segment={"start_frame": 50, "end_frame": 40}), 0.5, "is after end_frame"),
        (
            answer(temporal_segment={"start_frame": 0, "end_frame": 125}),
            0.5,
            "past the clip's last",
        ),
        (answer(temporal_segment={"start_frame": -1, "end_frame": 5}), 0.5, "negative"),
        (answer(temporal_segment={"start_frame": 1.5, "end_frame": 5}), 0.5, "must be an integer"),
        (answer(temporal_segment={"start_frame": "1", "end_frame": 5}), 0.5, "must be an integer"),
        (answer(temporal_segment={"start_frame": 1}), 0.5, "no 'end_frame' field"),
        (answer(temporal_segment=[1, 2]), 0.5, "'temporal_segment' as an object"),
        (
            json.dumps({"temporal_segment": GOOD["temporal_segment"]}),
            0.5,
            "no 'dominant_operation'",
        ),
        ("I think it is taping.", 0.5, "no JSON object found"),
        ("", 0.5, "no JSON object found"),
        ("[" * 5000 + "{" * 5000, 0.5, "no JSON object found"),
        (answer(), None, "no 'confidence'"),
        (answer(), 1.5, "confidence must lie in [0, 1]"),
        (answer(), float("nan"), "confidence must lie in [0, 1]"),
        (answer(confidence="high"), None, "confidence must be a number"),
    ],
)
def test_rejects_invalid_answers_with_a_clear_message(
    text: str, confidence: float | None, message: str
) -> None:
    with pytest.raises(OutputParseError) as info:
        parse(text, confidence=confidence)
    assert message in str(info.value)


def test_end_frame_bound_follows_the_clip_length() -> None:
    short = answer(temporal_segment={"start_frame": 10, "end_frame": 59})
    assert parse(short, n=60).end_frame == 59
    with pytest.raises(OutputParseError, match="the clip has 59 frames"):
        parse(short, n=59)


def test_error_keeps_the_raw_output() -> None:
    text = answer(dominant_operation="Dance")
    with pytest.raises(OutputParseError) as info:
        parse(text)
    assert info.value.raw_output == text


def test_garbage_never_crashes() -> None:
    for text in ["{", "}{", '{"a": }', "\x00\xff", '{"dominant_operation": null}', "{" * 100]:
        with pytest.raises(OutputParseError):
            parse(text)


def test_codes_and_zero_padded_frames_are_accepted() -> None:
    text = (
        '{"dominant_operation": "c", "temporal_segment": {"start_frame": 007, '
        '"end_frame": 098}, "anticipated_next_operation": "D"}'
    )
    prediction = parse_prediction(text, taxonomy=TAXONOMY, clip_frame_count=125, confidence=0.5)
    assert prediction.dominant_operation == "Tape"
    assert prediction.anticipated_next_operation == "Put Items"
    assert (prediction.start_frame, prediction.end_frame) == (7, 98)
    with pytest.raises(OutputParseError, match="not an operation"):
        parse_prediction(
            text.replace('"c"', '"Z"'), taxonomy=TAXONOMY, clip_frame_count=125, confidence=0.5
        )
