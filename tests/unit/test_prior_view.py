"""A transition prior for people: the table (rows that sum to 1, the most likely next
operations, durations, counts), its JSON document, a prior stored before it kept counts, and the
heatmap PNG."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from packsight.labels.metrics import ClipTruth
from packsight.labels.prior import START, TransitionPrior, learn_prior
from packsight.labels.prior_plot import render_prior_png
from packsight.labels.prior_view import prior_document, prior_lines, successors
from packsight.labels.taxonomy import Taxonomy, load_taxonomy

TAXONOMY = Taxonomy(
    name="toy",
    operations=("Fold", "Tape", "Label", "Idle"),
    background="Idle",
    unknown="Idle",
    procedure=("Fold", "Tape", "Label"),
)
# Two videos of windows: (operation, the truth's next operation).
VIDEOS = [
    [("Fold", "Tape"), ("Fold", "Tape"), ("Tape", "Label"), ("Idle", "Label"), ("Label", "Fold")],
    [("Tape", "Label"), ("Label", "Fold"), ("Label", "Fold"), ("Fold", "Tape")],
]
SECONDS = [[("Fold", 8.0), ("Tape", 4.0), ("Idle", 3.0), ("Label", 5.0)], [("Label", 9.0)]]


@pytest.fixture(scope="module")
def prior() -> TransitionPrior:
    videos = [
        [ClipTruth(f"c{i}", op, 0, 124, nxt) for i, (op, nxt) in enumerate(video)]
        for video in VIDEOS
    ]
    return learn_prior(videos, TAXONOMY, segment_seconds=SECONDS)


def matrix_rows(lines: list[str], n: int) -> list[tuple[str, list[float], str]]:
    """(operation, probabilities, seen) of the table's matrix rows."""
    start = next(i for i, line in enumerate(lines) if line.startswith("window to next window"))
    rows = []
    for line in lines[start + 2 : start + 2 + n]:
        number, *rest = line.split()
        cells, seen = rest[-(n + 1) : -1], rest[-1]
        rows.append((" ".join(rest[: -(n + 1)]), [float(c) for c in cells], seen))
        assert number == str(len(rows))
    return rows


def test_the_matrix_rows_sum_to_one_and_carry_their_counts(prior: TransitionPrior) -> None:
    lines = prior_lines(prior)
    assert lines[0] == "taxonomy toy: learned from 2 videos, 9 windows, 7 window transitions"
    rows = matrix_rows(lines, len(TAXONOMY.operations))
    assert [op for op, _, _ in rows] == list(TAXONOMY.operations)
    for op, cells, _ in rows:
        # Each cell is rounded to 2 decimals: the sum is 1 within half a hundredth per cell.
        assert sum(cells) == pytest.approx(1.0, abs=0.005 * len(cells) + 1e-9), op
    assert [seen for _, _, seen in rows] == ["2", "2", "2", "1"]  # a video's last has none
    fold = rows[0][1]
    assert fold[0] == fold[1] > fold[2]  # Fold stays once and moves on to Tape once


def test_the_most_likely_next_operations_follow_the_procedure(prior: TransitionPrior) -> None:
    found = {s.context: s for s in successors(prior)}
    assert "Idle" not in found  # a pause takes the context of the operation before it
    assert {c: s.operation for c, s in found.items()} == {
        START: None,  # no video opens with a pause
        "Fold": "Tape",
        "Tape": "Label",
        "Label": "Fold",
    }
    assert found["Tape"].seen == 3  # Tape's own windows and the pause after it
    lines = prior_lines(prior)
    assert any(line.split() == ["Fold", "->", "Tape", f"{found['Fold'].probability:.2f}",
                                "seen", "3"] for line in lines)  # fmt: skip
    durations = lines[lines.index("durations of an operation's segments (seconds)") + 2 :]
    assert durations[0].split() == ["Fold", "8.0", "0.0", "1"]
    assert durations[2].split() == ["Label", "7.0", "2.0", "2"]


def test_a_context_never_seen_is_said_so() -> None:
    one = [[ClipTruth("c0", "Fold", 0, 124, "Tape"), ClipTruth("c1", "Fold", 0, 124, "Tape")]]
    lines = prior_lines(learn_prior(one, TAXONOMY))
    assert any(line.split() == ["Label", "->", "(never", "seen)", "seen", "0"] for line in lines)
    assert "  (none stored)" in lines  # no segment lengths were given
    assert prior_document(learn_prior(one, TAXONOMY))["most_likely_next"]["Label"] == {
        "operation": None,
        "probability": pytest.approx(1 / 4),
    }


def test_a_prior_stored_without_counts_still_shows(prior: TransitionPrior) -> None:
    stored = prior.to_json()
    assert stored["transitions_seen"] == [2, 2, 2, 1]
    old = {k: v for k, v in stored.items() if k not in ("transitions_seen", "successors_seen")}
    again = TransitionPrior.from_json(old)
    assert again.transitions_seen == () and again.successors_seen == {}
    lines = prior_lines(again)
    assert "7 window transitions" in lines[0]  # windows less videos: each video's pairs
    assert all(seen == "-" for _, _, seen in matrix_rows(lines, len(TAXONOMY.operations)))
    assert {s.context: s.operation for s in successors(again)}["Fold"] == "Tape"
    document = prior_document(again)
    assert document["window_transitions"] == 7 and document["transitions"] == old["transitions"]
    assert TransitionPrior.from_json(prior.to_json()) == prior


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated or corrupt file fails here, not at open()
    return image


def test_the_heatmap_is_a_png_of_sensible_size(prior: TransitionPrior) -> None:
    image = decode(render_prior_png(prior, title="prior of v1"))
    assert image.format == "PNG"
    assert 800 <= image.width <= 3000 and 400 <= image.height <= 2000
    # A bigger taxonomy's operations keep their cells legible: the image grows.
    big = load_taxonomy("openpack")
    videos = [[ClipTruth(f"c{i}", op, 0, 124, op) for i, op in enumerate(big.operations)]]
    large = decode(render_prior_png(learn_prior(videos, big), title="prior of v2"))
    assert large.width > image.width and large.height > image.height


def test_a_prior_without_operations_is_refused(prior: TransitionPrior) -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="one row per operation"):
        render_prior_png(replace(prior, transitions=()), title="bad")
