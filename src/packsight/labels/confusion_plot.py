"""A confusion matrix as a PNG heatmap. Pure: counts in, bytes out."""

from __future__ import annotations

import io
from collections.abc import Sequence


def _row_shares(matrix: Sequence[Sequence[int]]) -> list[list[float]]:
    # Colour by share of the true class, not raw count: a class with 5 clips next to one with
    # 500 would otherwise render as an empty row.
    shares = []
    for row in matrix:
        total = sum(row)
        shares.append([n / total if total else 0.0 for n in row])
    return shares


def render_confusion_png(
    matrix: list[list[int]], rows: list[str], columns: list[str], *, title: str
) -> bytes:
    """Rows are true operations, columns predicted ones; each cell shows its count."""
    if len(matrix) != len(rows) or any(len(r) != len(columns) for r in matrix):
        raise ValueError(
            f"matrix is not {len(rows)} x {len(columns)} (rows x columns of the labels given)"
        )
    if not rows or not columns:
        raise ValueError("a confusion matrix needs at least one row and one column")

    # Imported here so the API and workers start without paying for matplotlib. The
    # object-oriented Figure + Agg canvas is used instead of pyplot: pyplot keeps global state
    # that is not thread-safe, and API routes render in a thread pool. It never needs a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shares = _row_shares(matrix)
    # Grow with the class count so labels and numbers stay legible for bigger taxonomies.
    width = max(6.0, 0.7 * len(columns) + 3.5)
    height = max(5.0, 0.55 * len(rows) + 3.0)
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    colorbar.set_label("share of the true operation's clips")

    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            # Dark cells get white text so the number stays readable on any shade.
            colour = "white" if shares[i][j] > 0.5 else "black"
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)

    axes.set_xticks(range(len(columns)), labels=columns)
    axes.set_yticks(range(len(rows)), labels=rows)
    # Rotated and anchored at the tick so long operation names neither overlap nor drift.
    for label in axes.get_xticklabels():
        label.set(rotation=45, ha="right", rotation_mode="anchor")
    axes.set_xlabel("predicted operation")
    axes.set_ylabel("true operation")
    axes.set_title(title)

    buffer = io.BytesIO()
    # No "Software" metadata: the bytes then depend on the input only, not the library version.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
