"""A transition prior as a PNG: the window-to-window matrix as a heatmap (operations on both
axes, each cell's probability written in it) and beside it the most likely next operation of
the procedure after each one. Pure: a prior in, bytes out."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from packsight.labels.prior import START, TransitionPrior
from packsight.labels.prior_view import learned_from, successor_contexts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage


def render_prior_png(prior: TransitionPrior, *, title: str) -> bytes:
    ops = list(prior.operations)
    if not ops or len(prior.transitions) != len(ops):
        raise ValueError("a prior's matrix needs one row per operation")
    contexts = successor_contexts(prior)
    # Imported here, and the object-oriented API rather than pyplot (global state, not
    # thread-safe), as for the confusion matrix.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(ops)
    side = max(4.5, 0.62 * n + 2.4)  # each panel grows with the operations, cells stay legible
    width = 2 * side + 1.5
    figure = Figure(figsize=(width, side + 1.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    _heatmap(left, prior.transitions, ops, ops)
    left.set_xlabel("next window's operation")
    left.set_ylabel("this window's operation")
    left.set_title("window to next window", fontsize="medium")
    following = [prior.successors[c] for c in contexts]
    image = _heatmap(right, following, ["(start)" if c == START else c for c in contexts], ops)
    right.set_xlabel("next operation")
    right.set_ylabel("after")
    right.set_title("next operation of the procedure", fontsize="medium")
    figure.colorbar(image, ax=[left, right], fraction=0.025, pad=0.01, label="probability")
    shown = f"{title}: {learned_from(prior)}"
    # A model version's name holds paths: wrapped to the figure's width, not cut at its edge.
    figure.suptitle("\n".join(textwrap.wrap(shown, int(width * 10))), fontsize="medium")
    buffer = io.BytesIO()
    # No "Software" metadata: the bytes then depend on the input only, not the library version.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _heatmap(
    axes: Axes, matrix: Sequence[Sequence[float]], rows: list[str], columns: list[str]
) -> AxesImage:
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    small = 8 if len(columns) > 8 else 9
    for i, row in enumerate(matrix):
        for j, p in enumerate(row):
            # Dark cells get white text; a blank instead of 0.00 keeps the order visible.
            text = f"{p:.2f}" if round(p, 2) else ""
            colour = "white" if p > 0.5 else "black"
            axes.text(j, i, text, ha="center", va="center", fontsize=small, color=colour)
    axes.set_xticks(range(len(columns)), labels=columns)
    axes.set_yticks(range(len(rows)), labels=rows)
    # Rotated and anchored at the tick so long operation names neither overlap nor drift.
    for label in axes.get_xticklabels():
        label.set(rotation=45, ha="right", rotation_mode="anchor")
    return image
