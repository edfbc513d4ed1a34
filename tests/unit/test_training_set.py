"""Training windows around boundaries, clip ground truth from segments, and the fixed splits."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from packsight.labels.taxonomy import Taxonomy, load_taxonomy
from packsight.training.windows import (
    TrainingWindow,
    procedure_successor,
    select_training_windows,
    split_for_subject,
    truth_for_window,
)
from packsight.video.synth import write_synthetic_archive

FPS = 25
CLIP = 125  # 5 s at 25 fps
JITTER = 12  # whole frames within ±0.5 s at 25 fps
# 40 s: Box Setup 0-200, Tape 200-300, Idle 300-340, Label 340-800, Final Check 800-1000.
SEGMENTS = [
    ("Box Setup", 0, 200),
    ("Tape", 200, 300),
    ("Idle", 300, 340),
    ("Label", 340, 800),
    ("Final Check", 800, 1000),
]
BOUNDARIES = [200, 300, 340, 800]


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy("assignment")


class WindowOptions(TypedDict, total=False):  # select_training_windows' keywords
    frame_count: int
    fps: float
    clip_seconds: float
    boundary_jitter_s: float
    seed: int
    mid_per_segment: int


def _windows(
    segments: list[tuple[str, int, int]] = SEGMENTS, **kw: Unpack[WindowOptions]
) -> list[TrainingWindow]:
    options: WindowOptions = {"frame_count": 1000, "fps": FPS, **kw}
    return select_training_windows(segments, **options)


def test_every_boundary_gets_a_window_centred_within_half_a_second() -> None:
    windows = _windows()
    around = [w for w in windows if w.boundary is not None]
    # (`if`: a list's items are not narrowed by the filter that made it)
    assert (
        sorted(w.start_frame + w.boundary for w in around if w.boundary is not None) == BOUNDARIES
    )
    for w in around:
        assert w.boundary is not None
        assert w.end_frame - w.start_frame == CLIP
        centre = w.start_frame + CLIP // 2
        assert abs(centre - (w.start_frame + w.boundary)) <= JITTER
    assert windows == sorted(windows, key=lambda w: (w.start_frame, w.end_frame))


def test_windows_are_deterministic_for_a_seed_and_vary_with_it() -> None:
    assert _windows(seed=7) == _windows(seed=7)
    offsets = {tuple(w.boundary for w in _windows(seed=seed)) for seed in range(5)}
    assert len(offsets) > 1


def test_windows_clamp_at_the_video_edges() -> None:
    segments = [("Idle", 0, 3), ("Box Setup", 3, 297), ("Tape", 297, 300)]
    windows = _windows(segments, frame_count=300, mid_per_segment=0)
    assert windows == [TrainingWindow(0, CLIP, 3), TrainingWindow(300 - CLIP, 300, CLIP - 3)]


def test_a_video_shorter_than_a_clip_is_one_whole_window() -> None:
    segments = [("Tape", 0, 40), ("Label", 40, 80)]
    assert _windows(segments, frame_count=80) == [TrainingWindow(0, 80, 40)]


def test_mid_operation_windows_sit_inside_long_segments() -> None:
    mid = [w for w in _windows() if w.boundary is None]
    # Only Box Setup (200), Label (460) and Final Check (200) are at least a clip long.
    # Centred: Box Setup's slack of 75 frames puts the window at round(37.5) = 38.
    assert [(w.start_frame, w.end_frame) for w in mid] == [(38, 163), (508, 633), (838, 963)]
    three = [w for w in _windows(mid_per_segment=3) if w.boundary is None]
    label = [w for w in three if w.start_frame >= 340 and w.end_frame <= 800]
    assert [w.start_frame for w in label] == [424, 508, 591]
    assert not [w for w in _windows(mid_per_segment=0) if w.boundary is None]


def test_window_selection_rejects_a_jitter_wider_than_the_clip() -> None:
    with pytest.raises(ValueError, match="jitter"):
        _windows(boundary_jitter_s=3.0)
    with pytest.raises(ValueError, match="overlaps"):
        _windows([("Tape", 0, 50), ("Label", 40, 90)])


def test_truth_of_a_window_spanning_three_operations(taxonomy: Taxonomy) -> None:
    # [250, 375): Tape 250-300 (50 frames), Idle 300-340 (40), Label 340-375 (35).
    truth = truth_for_window(SEGMENTS, (250, 375), taxonomy=taxonomy, clip_id="U0101_S0100_t0010")
    assert truth.clip_id == "U0101_S0100_t0010"
    assert (truth.dominant_operation, truth.start_frame, truth.end_frame) == ("Tape", 0, 49)
    # Idle after Tape is a pause, not the next step.
    assert truth.next_operation == "Label"


def test_truth_when_the_dominant_operation_is_background(taxonomy: Taxonomy) -> None:
    segments = [("Tape", 0, 20), ("Idle", 20, 110), ("Label", 110, 200)]
    truth = truth_for_window(segments, (0, 125), taxonomy=taxonomy)
    assert (truth.dominant_operation, truth.start_frame, truth.end_frame) == ("Idle", 20, 109)
    assert truth.next_operation == "Label"


def test_truth_of_the_last_operation_is_unknown_or_the_procedure(taxonomy: Taxonomy) -> None:
    truth = truth_for_window(SEGMENTS, (875, 1000), taxonomy=taxonomy)
    assert (truth.dominant_operation, truth.start_frame, truth.end_frame) == ("Final Check", 0, 124)
    assert truth.next_operation == "Unknown"
    with_procedure = truth_for_window(
        SEGMENTS, (875, 1000), procedure_successor(taxonomy), taxonomy=taxonomy
    )
    assert with_procedure.next_operation == "Box Setup"  # the next box starts over


def test_truth_ignores_trailing_background_and_fills_gaps(taxonomy: Taxonomy) -> None:
    segments = [("Tape", 0, 100), ("Idle", 100, 150), ("Tape", 150, 160)]
    assert truth_for_window(segments, (0, 125), taxonomy=taxonomy).next_operation == "Unknown"
    # Frames 40-90 have no annotation: background, as OpenPack's uncovered time is Null.
    gappy = [("Tape", 0, 40), ("Label", 90, 200)]
    truth = truth_for_window(gappy, (20, 145), taxonomy=taxonomy)
    assert (truth.dominant_operation, truth.start_frame, truth.end_frame) == ("Label", 70, 124)
    assert truth_for_window(gappy, (0, 90), taxonomy=taxonomy).dominant_operation == "Idle"
    # A tie (40 Tape, 40 background frames) goes to the earlier operation.
    assert truth_for_window(gappy, (0, 80), taxonomy=taxonomy).dominant_operation == "Tape"


def test_truth_segment_is_the_longest_run_of_the_dominant_operation(taxonomy: Taxonomy) -> None:
    segments = [("Tape", 0, 30), ("Pack", 30, 60), ("Tape", 60, 100), ("Label", 100, 200)]
    truth = truth_for_window(segments, (0, 125), taxonomy=taxonomy)
    assert (truth.dominant_operation, truth.start_frame, truth.end_frame) == ("Tape", 60, 99)
    assert truth.next_operation == "Label"
    with pytest.raises(ValueError, match="start < end"):
        truth_for_window(segments, (50, 50), taxonomy=taxonomy)


def test_split_for_subject_defaults_and_configuration() -> None:
    assert [split_for_subject(f"U010{i}") for i in range(1, 10)] == [
        *["train"] * 6,
        "validation",
        "test",
        None,
    ]
    assert split_for_subject("U0109", test=("U0109",)) == "test"
    assert split_for_subject("U01", validation="U0107") is None
    with pytest.raises(ValueError, match="several splits"):
        split_for_subject("U0107", train=("U0107",))


def test_windows_and_truths_over_a_synthetic_archive(tmp_path: Path, taxonomy: Taxonomy) -> None:
    videos = write_synthetic_archive(tmp_path, videos=3, seed=42)
    successor = procedure_successor(taxonomy)
    for video in videos:
        windows = select_training_windows(
            video.segments, frame_count=video.frame_count, fps=video.fps
        )
        # Two boundaries near a video edge can clamp to one window: each must still be inside one.
        for _, boundary, _ in video.segments[1:]:
            assert any(w.start_frame <= boundary < w.end_frame for w in windows)
        for window in windows:
            if window.boundary is not None:
                assert window.start_frame + window.boundary in [s for _, s, _ in video.segments]
            assert 0 <= window.start_frame < window.end_frame <= video.frame_count
            length = window.end_frame - window.start_frame
            for procedure_next in (None, successor):
                truth = truth_for_window(
                    video.segments,
                    (window.start_frame, window.end_frame),
                    procedure_next,
                    taxonomy=taxonomy,
                )
                assert truth.dominant_operation in taxonomy.operations
                assert truth.next_operation in taxonomy.operations
                assert truth.next_operation != taxonomy.background
                assert 0 <= truth.start_frame <= truth.end_frame < length
