"""The confusion heatmap: a valid PNG that grows with the class count, the same bytes for the
same input, and a clear error for a matrix that does not match its labels."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from packsight.labels.confusion_plot import render_confusion_png
from packsight.labels.taxonomy import load_taxonomy

OPS = ["Tape", "Pack", "Idle"]
MATRIX = [[5, 1, 0], [0, 200, 3], [1, 0, 0]]  # a rare class next to a common one, an empty row


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated or corrupt file fails here, not at open()
    return image


def test_renders_a_png_pillow_can_decode() -> None:
    image = decode(render_confusion_png(MATRIX, OPS, OPS, title="v1 / test"))
    assert image.format == "PNG"
    assert 400 <= image.width <= 3000 and 300 <= image.height <= 3000


def test_same_input_gives_the_same_bytes() -> None:
    first = render_confusion_png(MATRIX, OPS, OPS, title="v1 / test")
    assert render_confusion_png(MATRIX, OPS, OPS, title="v1 / test") == first
    assert render_confusion_png(MATRIX, OPS, OPS, title="v2 / test") != first


def test_a_big_taxonomy_gets_a_bigger_image() -> None:
    ops = list(load_taxonomy("assignment").operations)
    columns = [*ops, "(none)"]
    big = [[(i + j) % 4 for j in range(len(columns))] for i in range(len(ops))]
    small = decode(render_confusion_png(MATRIX, OPS, OPS, title="small"))
    large = decode(render_confusion_png(big, ops, columns, title="large"))
    assert large.width > small.width and large.height >= small.height


@pytest.mark.parametrize(
    ("matrix", "rows", "columns"),
    [
        ([[1, 2]], ["a", "b"], ["a", "b"]),  # too few rows
        ([[1], [2]], ["a", "b"], ["a", "b"]),  # a short row
        ([], [], []),
    ],
)
def test_mismatched_shapes_are_refused(
    matrix: list[list[int]], rows: list[str], columns: list[str]
) -> None:
    with pytest.raises(ValueError, match=r"matrix|at least one"):
        render_confusion_png(matrix, rows, columns, title="bad")
