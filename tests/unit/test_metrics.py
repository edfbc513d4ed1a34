"""OCA, tIoU@0.5, AA@1, the confusion matrix, results.json and the promotion rule, by hand."""

from __future__ import annotations

import json

import pytest

from packsight.labels.metrics import (
    NONE_LABEL,
    ClipTruth,
    Evaluation,
    confusion_matrix,
    evaluate,
    is_better,
    results_json,
    temporal_iou,
)
from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import Taxonomy, load_taxonomy


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy("assignment")


def _pred(op: str, start: int, end: int, following: str) -> ClipPrediction:
    return ClipPrediction(op, start, end, following, confidence=0.9)


def _scores(oca: float, tiou: float, aa: float, count: int = 10) -> Evaluation:
    return Evaluation(oca, tiou, aa, count=count, missing=0, confusion={})


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        ((10, 20), (10, 20), 1.0),  # identical
        ((0, 4), (10, 20), 0.0),  # disjoint
        ((0, 4), (5, 9), 0.0),  # adjacent: inclusive ends do not share a frame
        ((0, 5), (5, 9), 1 / 10),  # touching: frame 5 is in both (1 shared of 10)
        ((7, 7), (7, 7), 1.0),  # one frame each
        ((0, 9), (5, 14), 5 / 15),  # half overlap: frames 5..9
        ((0, 99), (25, 74), 50 / 100),  # truth inside prediction
        ((25, 74), (0, 99), 0.5),  # symmetric
    ],
)
def test_temporal_iou_on_inclusive_ranges(
    pred: tuple[int, int], truth: tuple[int, int], expected: float
) -> None:
    assert temporal_iou(pred, truth) == pytest.approx(expected)


def test_temporal_iou_rejects_reversed_ranges() -> None:
    with pytest.raises(ValueError, match="pred range starts after it ends"):
        temporal_iou((9, 3), (0, 5))
    with pytest.raises(ValueError, match="truth"):
        temporal_iou((0, 5), (6, 5))


def test_evaluate_hand_computed_metrics(taxonomy: Taxonomy) -> None:
    truths = [
        ClipTruth("a", "Tape", 0, 99, "Label"),
        ClipTruth("b", "Tape", 0, 49, "Label"),
        ClipTruth("c", "Pack", 20, 80, "Wrap"),
        ClipTruth("d", "Label", 0, 124, "Final Check"),
    ]
    predictions = {
        "a": _pred("Tape", 0, 99, "Label"),  # all right
        "b": _pred("Tape", 0, 124, "Pack"),  # IoU 50/125 = 0.4 < 0.5, next wrong
        "c": _pred("Wrap", 30, 80, "Wrap"),  # class wrong, IoU 51/61 ok, next right
        "d": _pred("Label", 0, 62, "Box Setup"),  # IoU 63/125 = 0.504 ok, next wrong
        "elsewhere": _pred("Tape", 0, 1, "Tape"),  # not in the truths: ignored
    }
    result = evaluate(predictions, truths, taxonomy)
    assert (result.oca, result.tiou_at_05, result.aa_at_1) == (0.75, 0.75, 0.5)
    assert (result.count, result.missing) == (4, 0)
    assert result.confusion == {("Tape", "Tape"): 2, ("Pack", "Wrap"): 1, ("Label", "Label"): 1}


def test_missing_predictions_count_as_wrong_everywhere(taxonomy: Taxonomy) -> None:
    truths = [
        ClipTruth("a", "Tape", 0, 99, "Label"),
        ClipTruth("b", "Idle", 0, 99, "Tape"),
        ClipTruth("c", "Tape", 0, 99, "Label"),
    ]
    # "b" failed to parse (None), "c" was never labelled (absent).
    result = evaluate({"a": _pred("Tape", 0, 99, "Label"), "b": None}, truths, taxonomy)
    assert (result.oca, result.tiou_at_05, result.aa_at_1) == pytest.approx((1 / 3,) * 3)
    assert (result.count, result.missing) == (3, 2)
    assert result.confusion == {
        ("Tape", "Tape"): 1,
        ("Idle", NONE_LABEL): 1,
        ("Tape", NONE_LABEL): 1,
    }


def test_evaluate_rejects_bad_truth_sets(taxonomy: Taxonomy) -> None:
    with pytest.raises(ValueError, match="empty"):
        evaluate({}, [], taxonomy)
    twice = [ClipTruth("a", "Tape", 0, 1, "Label")] * 2
    with pytest.raises(ValueError, match="appears twice"):
        evaluate({}, twice, taxonomy)
    with pytest.raises(ValueError, match="'Dance' is not an operation"):
        evaluate({}, [ClipTruth("a", "Dance", 0, 1, "Label")], taxonomy)


def test_confusion_matrix_follows_taxonomy_order() -> None:
    operations = ("Box Setup", "Tape", "Label")
    confusion = {("Tape", "Tape"): 2, ("Tape", "Label"): 1, ("Label", "Box Setup"): 3}
    assert confusion_matrix(confusion, operations) == [[0, 0, 0], [0, 2, 1], [3, 0, 0]]
    with_missing = {**confusion, ("Box Setup", NONE_LABEL): 4}
    assert confusion_matrix(with_missing, operations) == [
        [0, 0, 0, 4],
        [0, 2, 1, 0],
        [3, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix({("Tape", "Dance"): 1}, operations)


def test_confusion_matrix_of_an_evaluation(taxonomy: Taxonomy) -> None:
    truths = [ClipTruth("a", "Tape", 0, 9, "Label"), ClipTruth("b", "Label", 0, 9, "Idle")]
    result = evaluate({"a": _pred("Label", 0, 9, "Label")}, truths, taxonomy)
    matrix = confusion_matrix(result.confusion, taxonomy.operations)
    assert len(matrix) == len(taxonomy.operations)
    assert len(matrix[0]) == len(taxonomy.operations) + 1
    tape, label = taxonomy.index("Tape"), taxonomy.index("Label")
    assert matrix[tape][label] == 1
    assert matrix[label][-1] == 1
    assert sum(map(sum, matrix)) == 2


def test_results_json_has_a_block_per_model() -> None:
    base, tuned = _scores(0.2, 0.1, 0.15, count=30), _scores(0.7, 0.6, 0.5, count=30)
    document = results_json(base, tuned, base_model="Qwen2-VL-2B", finetuned_model="run-7")
    assert document == {
        "base_model": {
            "model": "Qwen2-VL-2B",
            "OCA": 0.2,
            "tIoU@0.5": 0.1,
            "AA@1": 0.15,
            "tIoU@0.5 class-matched": 0.0,
            "mean tIoU": 0.0,
            "clips": 30,
        },
        "finetuned_model": {
            "model": "run-7",
            "OCA": 0.7,
            "tIoU@0.5": 0.6,
            "AA@1": 0.5,
            "tIoU@0.5 class-matched": 0.0,
            "mean tIoU": 0.0,
            "clips": 30,
        },
    }
    assert json.loads(json.dumps(document)) == document
    assert base.to_dict()["OCA"] == 0.2 and base.to_dict()["clips"] == 30


def test_the_whole_clip_wins_tiou_but_not_the_class_matched_score(taxonomy: Taxonomy) -> None:
    """The seed's tIoU@0.5 ignores the class: a whole-clip segment of the wrong operation scores
    on it, not on the class-matched score; the mean IoU shows how close segments are."""
    truths = [
        ClipTruth("a", "Tape", 0, 110, "Label"),  # most of the clip
        ClipTruth("b", "Pack", 60, 124, "Tape"),  # about half of it
    ]
    whole_clip_wrong_class = {
        "a": ClipPrediction("Pack", 0, 124, "Label", 0.5),
        "b": ClipPrediction("Tape", 0, 124, "Tape", 0.5),
    }
    scores = evaluate(whole_clip_wrong_class, truths, taxonomy)
    assert scores.tiou_at_05 == 1.0 and scores.tiou_matched_at_05 == 0.0
    assert scores.mean_tiou == pytest.approx((111 / 125 + 65 / 125) / 2)


def test_is_better_promotes_a_primary_gain_within_tolerance() -> None:
    champion = _scores(0.50, 0.60, 0.40)
    # OCA drops by exactly the tolerance (0.50 - 0.48 is 0.020000000000000018 in floats).
    better, why = is_better(_scores(0.48, 0.60, 0.45), champion)
    assert better
    assert why.startswith("Promote: AA@1 rises 0.400 -> 0.450")


def test_is_better_refuses_no_primary_gain() -> None:
    champion = _scores(0.50, 0.60, 0.40)
    better, why = is_better(_scores(0.90, 0.90, 0.40), champion)
    assert not better
    assert why == "Keep the champion: AA@1 0.400 is not above 0.400."


def test_is_better_refuses_a_gain_bought_with_a_drop() -> None:
    better, why = is_better(_scores(0.50, 0.50, 0.45), _scores(0.50, 0.60, 0.40))
    assert not better
    assert "tIoU@0.5 drops 0.600 -> 0.500, more than the 0.020 tolerance" in why


def test_is_better_with_another_primary_and_tolerance() -> None:
    candidate, champion = _scores(0.60, 0.55, 0.30), _scores(0.50, 0.60, 0.40)
    assert is_better(candidate, champion, primary="OCA", tolerance=0.10)[0]
    assert not is_better(candidate, champion, primary="OCA", tolerance=0.05)[0]
    with pytest.raises(ValueError, match="unknown primary metric"):
        is_better(candidate, champion, primary="F1")


def test_is_better_refuses_scores_on_different_clip_counts() -> None:
    better, why = is_better(_scores(0.9, 0.9, 0.9, count=29), _scores(0.1, 0.1, 0.1, count=30))
    assert not better
    assert "not comparable" in why
