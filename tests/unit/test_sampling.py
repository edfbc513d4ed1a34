"""Motion-magnitude adaptive sampling: the seed document's algorithm and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from packsight.video.sampling import (
    boundary_sigma,
    motion_magnitude,
    motion_magnitude_chunks,
    sample_motion_adaptive,
)


def test_motion_magnitude_is_mean_absolute_difference_without_uint8_wraparound() -> None:
    gray = np.stack([np.full((4, 6), v, dtype=np.uint8) for v in (5, 3, 3, 250)])
    # uint8 arithmetic would give |3 - 5| = 254; the signal must say 2.
    assert motion_magnitude(gray).tolist() == [0.0, 2.0, 0.0, 247.0]


def test_motion_magnitude_accepts_float_frames_and_single_frames() -> None:
    gray = np.array([[[0.0, 1.0]], [[0.5, 0.0]]])
    assert motion_magnitude(gray).tolist() == pytest.approx([0.0, 0.75])
    assert motion_magnitude(np.zeros((1, 3, 3), np.uint8)).tolist() == [0.0]


def test_motion_magnitude_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        motion_magnitude(np.zeros((4, 3, 3, 3), np.uint8))


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_chunked_motion_equals_whole_stack(chunk: int) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (23, 12, 16), dtype=np.uint8)
    chunks = (gray[i : i + chunk] for i in range(0, len(gray), chunk))
    np.testing.assert_allclose(motion_magnitude_chunks(chunks), motion_magnitude(gray))


def test_chunked_motion_of_nothing_is_empty() -> None:
    assert motion_magnitude_chunks([]).shape == (0,)


@pytest.mark.parametrize("boundary", [None, 0, 1, 60, 123, 124])
def test_long_clip_gets_n_unique_sorted_indices_with_mandatory_frames(boundary: int | None) -> None:
    motion = np.random.default_rng(1).random(125)
    picks = sample_motion_adaptive(motion, 8, boundary=boundary)
    assert len(picks) == 8 and len(set(picks)) == 8
    assert picks == sorted(picks) and all(isinstance(i, int) for i in picks)
    assert picks[0] >= 0 and picks[-1] <= 124
    assert {0, 124} <= set(picks)
    if boundary is not None:
        assert boundary in picks


def test_sampling_is_deterministic_and_ties_go_to_the_lower_index() -> None:
    motion = np.random.default_rng(2).random(200)
    assert sample_motion_adaptive(motion, 8, boundary=77) == sample_motion_adaptive(
        motion.copy(), 8, boundary=77
    )
    flat = np.ones(50)
    assert sample_motion_adaptive(flat, 8) == [0, 1, 2, 3, 4, 5, 6, 49]


def test_all_zero_motion_stays_zero_and_is_still_sampled() -> None:
    assert sample_motion_adaptive(np.zeros(30), 4) == [0, 1, 2, 29]


def test_top_motion_frames_are_chosen_on_a_spiky_signal() -> None:
    motion = np.full(125, 0.1)
    spikes = [17, 40, 77, 90, 101, 110]
    motion[spikes] = [3.0, 5.0, 4.0, 9.0, 2.0, 6.0]
    assert sample_motion_adaptive(motion, 8) == [0, *spikes, 124]
    # With fewer free slots the biggest spikes win.
    assert sample_motion_adaptive(motion, 4) == [0, 90, 110, 124]


def test_boundary_weight_pulls_picks_toward_the_boundary() -> None:
    motion = np.ones(125)
    boundary = 80
    without = sample_motion_adaptive(motion, 8)
    with_boundary = sample_motion_adaptive(motion, 8, boundary=boundary)

    def mean_distance(picks: list[int]) -> float:
        free = [i for i in picks if i not in (0, 124)]
        return float(np.mean([abs(i - boundary) for i in free]))

    assert mean_distance(with_boundary) < 5 < mean_distance(without)
    # A wider gaussian reaches further but still centres on the boundary.
    wide = sample_motion_adaptive(motion, 8, boundary=boundary, sigma=boundary_sigma(50))
    assert mean_distance(wide) < 5


def test_boundary_weight_competes_with_real_motion() -> None:
    motion = np.full(125, 0.01)
    motion[20] = 1.0
    picks = sample_motion_adaptive(motion, 4, boundary=100, boundary_weight=0.5)
    # Normalised motion 1.0 at frame 20 beats the boundary's neighbours (<= 0.5 + 0.01).
    assert picks == [0, 20, 100, 124]


def test_short_clips_get_n_spread_indices_with_repeats() -> None:
    assert sample_motion_adaptive(np.zeros(3), 8) == [0, 0, 1, 1, 1, 1, 2, 2]
    assert sample_motion_adaptive(np.zeros(1), 8) == [0] * 8
    assert sample_motion_adaptive(np.ones(8), 8) == list(range(8))


def test_two_frames_with_a_boundary_keep_the_clip_ends() -> None:
    assert sample_motion_adaptive(np.ones(40), 2, boundary=20) == [0, 39]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"motion": np.ones(10), "n_frames": 1}, "n_frames"),
        ({"motion": np.ones(10), "boundary": 10}, "boundary 10 is outside"),
        ({"motion": np.ones(10), "boundary": -1}, "boundary -1 is outside"),
        ({"motion": np.ones(10), "sigma": 0.0}, "sigma"),
        ({"motion": np.ones((2, 5))}, "1-D"),
        ({"motion": np.array([])}, "non-empty"),
        ({"motion": np.array([0.0, -1.0, 2.0])}, "non-negative"),
        ({"motion": np.array([0.0, np.nan, 2.0])}, "finite"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_motion_adaptive(**kwargs)


def test_boundary_sigma_is_half_a_second_of_frames() -> None:
    assert boundary_sigma(25) == 12.5
    with pytest.raises(ValueError):
        boundary_sigma(0)
