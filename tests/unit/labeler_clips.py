"""Clips the labeler tests feed the model (random frames of a given clip length) and what makes a
prediction valid."""

from dataclasses import replace

import numpy as np
import pytest

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.parsing import OutputParseError, parse_prediction

TAXONOMY = load_taxonomy("assignment")


def make_clip(seed: int, clip_frame_count: int, n: int = 8, size: int = 56) -> ClipInput:
    frames = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    indices = tuple(round(i * (clip_frame_count - 1) / (n - 1)) for i in range(n))
    return ClipInput(frames=frames, clip_frame_count=clip_frame_count, frame_indices=indices)


CLIPS = [make_clip(1, 125), make_clip(2, 60), make_clip(3, 125)]


def frames_of(clip: ClipInput) -> np.ndarray:
    """make_clip's frames (decoded: not a frame pack, nor a tensor)."""
    assert isinstance(clip.frames, np.ndarray)
    return clip.frames


def predicted(outcome: ClipPrediction | Exception) -> ClipPrediction:
    """The clip's prediction, where a test expects one (a parse or load error fails it)."""
    assert isinstance(outcome, ClipPrediction), outcome
    return outcome


def assert_same_answer(
    a: ClipPrediction | Exception, b: ClipPrediction | Exception, *, confidence_within: float
) -> None:
    """The same decisions, and confidences within `confidence_within` of each other."""
    a, b = predicted(a), predicted(b)
    decisions = "dominant_operation", "start_frame", "end_frame", "anticipated_next_operation"
    assert [getattr(a, d) for d in decisions] == [getattr(b, d) for d in decisions]
    assert a.confidence == pytest.approx(b.confidence, abs=confidence_within)


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
    assert reparsed == replace(prediction, operation_probabilities=None, next_probabilities=None)
    # The evidence beside the answer: a probability per operation, the chosen one the largest.
    for probabilities, chosen in (
        (prediction.operation_probabilities, prediction.dominant_operation),
        (prediction.next_probabilities, prediction.anticipated_next_operation),
    ):
        assert probabilities is not None and len(probabilities) == len(TAXONOMY.operations)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert max(probabilities) == probabilities[TAXONOMY.operations.index(chosen)]
    assert prediction.operation_probabilities is not None  # checked in the loop above
    assert (
        prediction.confidence
        == prediction.operation_probabilities[
            TAXONOMY.operations.index(prediction.dominant_operation)
        ]
    )
