"""The labeler against real tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints (no mocks):
batched predictions, their confidences and validity, and the inputs it refuses."""

from pathlib import Path

import pytest
from labeler_clips import CLIPS, assert_same_answer, assert_valid, make_clip, predicted

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.labeler import Labeler
from packsight.vlm.parsing import OutputParseError


def test_batch_of_clips_with_different_lengths_gives_valid_predictions(labeler: Labeler) -> None:
    predictions = labeler.predict(CLIPS)
    assert len(predictions) == len(CLIPS)
    for prediction, clip in zip(predictions, CLIPS, strict=True):
        assert_valid(prediction, clip)


def test_confidence_comes_from_the_model(labeler: Labeler) -> None:
    confidences = [predicted(p).confidence for p in labeler.predict(CLIPS)]
    assert len(set(confidences)) == len(confidences)  # different frames, different probabilities


def test_batched_predictions_equal_one_by_one(labeler: Labeler) -> None:
    batched = labeler.predict(CLIPS)
    for prediction, clip in zip(batched, CLIPS, strict=True):
        alone = labeler.predict([clip])[0]
        assert_same_answer(alone, prediction, confidence_within=1e-4 * predicted(alone).confidence)


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


def test_unconstrained_random_weights_give_errors_not_exceptions(labeler: Labeler) -> None:
    labeler.constrained = False
    try:
        results = labeler.predict(CLIPS)
    finally:
        labeler.constrained = True
    assert len(results) == len(CLIPS)
    assert all(isinstance(r, OutputParseError) and r.raw_output for r in results)
