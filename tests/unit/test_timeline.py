"""The transition prior learned from window truths, and whole-video timelines smoothed with it."""

from __future__ import annotations

import pytest

from packsight.labels.metrics import ClipTruth
from packsight.labels.prediction import ClipPrediction
from packsight.labels.prior import START, TransitionPrior, learn_prior, successor_contexts
from packsight.labels.taxonomy import Taxonomy
from packsight.labels.timeline import ClipAnswer, smooth, timeline

TAXONOMY = Taxonomy(
    name="toy",
    operations=("Fold", "Tape", "Label", "Idle"),
    background="Idle",
    unknown="Idle",
    procedure=("Fold", "Tape", "Label"),
)
OPS = TAXONOMY.operations


def truths(ops: list[str]) -> list[ClipTruth]:
    """Windows of a video doing `ops`, each with the truth's next operation: the first later one
    that differs and is not a pause (else the procedure's successor)."""
    steps = TAXONOMY.procedure
    out = []
    for i, op in enumerate(ops):
        later = [o for o in ops[i + 1 :] if o not in (op, "Idle")]
        nxt = later[0] if later else steps[(steps.index(op) + 1) % 3] if op in steps else "Fold"
        out.append(ClipTruth(f"c{i}", op, 0, 124, nxt))
    return out


CYCLE = ["Fold", "Fold", "Tape", "Tape", "Idle", "Label", "Label", "Fold", "Fold", "Tape"]


@pytest.fixture(scope="module")
def prior() -> TransitionPrior:
    return learn_prior(
        [truths(CYCLE)] * 5,
        TAXONOMY,
        segment_seconds=[[("Fold", 10.0), ("Tape", 10.0), ("Idle", 5.0), ("Label", 12.0)]] * 5,
    )


def answer(probabilities: list[float], seg: tuple[int, int] = (0, 124)) -> ClipPrediction:
    best = max(range(len(OPS)), key=probabilities.__getitem__)
    return ClipPrediction(
        dominant_operation=OPS[best],
        start_frame=seg[0],
        end_frame=seg[1],
        anticipated_next_operation="Fold",
        confidence=probabilities[best],
        operation_probabilities=tuple(probabilities),
        next_probabilities=tuple(0.25 for _ in OPS),
    )


def clips(answers: list[ClipPrediction | None]) -> list[ClipAnswer]:
    return [ClipAnswer(f"c{i}", i * 125, (i + 1) * 125, a) for i, a in enumerate(answers)]


def test_the_prior_learns_order_durations_and_what_follows_a_pause(prior: TransitionPrior) -> None:
    for row in (*prior.transitions, *prior.successors.values(), prior.initial):
        assert sum(row) == pytest.approx(1.0) and min(row) > 0  # smoothed: nothing impossible
    fold, tape, label = (prior.index(op) for op in OPS[:3])
    assert max(range(4), key=prior.transitions[fold].__getitem__) == fold  # it lasts
    assert prior.transitions[fold][tape] > prior.transitions[fold][label]
    assert max(range(4), key=prior.initial.__getitem__) == fold
    assert max(range(4), key=prior.successors["Tape"].__getitem__) == label
    # A pause is judged by what came before it.
    assert successor_contexts(["Idle", "Fold", "Tape", "Idle"], "Idle") == [
        START, "Fold", "Tape", "Tape"
    ]  # fmt: skip
    assert prior.durations["Label"].mean_s == 12.0 and prior.durations["Fold"].segments == 5
    assert (prior.videos, prior.windows) == (5, 50)
    assert TransitionPrior.from_json(prior.to_json()) == prior


def test_a_weak_odd_answer_gives_way_and_a_confident_one_stands(prior: TransitionPrior) -> None:
    fold, tape = [0.9, 0.04, 0.03, 0.03], [0.04, 0.9, 0.03, 0.03]
    weak_label = [0.3, 0.2, 0.35, 0.15]  # Label, barely, in the middle of folding
    smoothed = smooth(clips([answer(fold), answer(weak_label), answer(fold), answer(tape)]), prior)
    assert [s.dominant_operation for s in smoothed if s] == ["Fold", "Fold", "Fold", "Tape"]
    assert smoothed[1] is not None and smoothed[1].confidence == 0.3  # the model's, for Fold
    # The procedure's next step wins over a model without an opinion.
    assert [s.anticipated_next_operation for s in smoothed if s] == ["Tape"] * 3 + ["Label"]
    sure_label = [0.01, 0.01, 0.97, 0.01]
    kept = smooth(clips([answer(fold), answer(sure_label), answer(fold)]), prior)
    assert kept[1] is not None and kept[1].dominant_operation == "Label"


def test_a_clip_without_an_answer_stays_without_one(prior: TransitionPrior) -> None:
    fold = [0.9, 0.04, 0.03, 0.03]
    smoothed = smooth(clips([answer(fold), None, answer(fold)]), prior)
    assert smoothed[1] is None and smoothed[0] is not None and smoothed[2] is not None
    assert smooth([], prior) == []


def test_the_timeline_merges_clips_and_places_edges_by_their_segments() -> None:
    fold = answer([0.9, 0.04, 0.03, 0.03], seg=(0, 124))
    fold_ends = answer([0.8, 0.1, 0.05, 0.05], seg=(0, 49))  # Fold stops at frame 49 of the clip
    tape = answer([0.05, 0.9, 0.03, 0.02], seg=(0, 124))
    tape_starts = answer([0.05, 0.7, 0.2, 0.05], seg=(30, 124))
    label = answer([0.05, 0.05, 0.85, 0.05], seg=(0, 124))
    answers = [fold, fold_ends, tape, tape_starts, None, label]
    segments = timeline(clips(answers), answers, fps=25.0)
    assert [(s.operation, s.start_frame, s.end_frame, s.clips) for s in segments] == [
        ("Fold", 0, 175, 2),  # the second clip's own segment ends after 50 frames
        ("Tape", 175, 500, 2),
        ("Label", 625, 750, 1),  # after the gap of the unanswered clip
    ]
    assert segments[0].confidence == pytest.approx(0.85) and segments[1].end_s == 20.0
