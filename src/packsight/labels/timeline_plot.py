"""A video's timeline as a PNG: rows of coloured segments (the smoothed timeline, the raw
per-clip answers, and the labelled truth when there is one) over the video's seconds, and the
clips' confidence beneath. Pure: segments in, bytes out."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

# (operation, start second, end second)
Span = tuple[str, float, float]


def render_timeline_png(
    rows: Sequence[tuple[str, Sequence[Span]]],
    operations: Sequence[str],
    confidence: Sequence[tuple[float, float]],
    *,
    duration_s: float,
    title: str,
) -> bytes:
    """`rows` are (name, spans) from top to bottom; `confidence` is (second, confidence) per
    clip; every operation keeps one colour across rows, named in the legend."""
    if not rows:
        raise ValueError("a timeline needs at least one row")
    # Imported here, and the object-oriented API rather than pyplot (global state, not
    # thread-safe), as for the confusion matrix.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colormaps["tab20"]
    colour = {op: palette(i % 20) for i, op in enumerate(operations)}
    width = min(24.0, max(8.0, duration_s / 8))
    figure = Figure(figsize=(width, 1.0 + 0.7 * len(rows) + 1.6), dpi=100, layout="constrained")
    bars, line = figure.subplots(2, 1, sharex=True, height_ratios=[max(1, len(rows)), 1.2])
    for y, (_, spans) in enumerate(reversed(rows)):
        for op, start, end in spans:
            bars.broken_barh([(start, end - start)], (y - 0.4, 0.8), color=colour.get(op, "grey"))
    bars.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
    bars.set_xlim(0, max(duration_s, 1e-3))
    # A model version's name holds paths: wrapped to the figure's width, not cut at its edge.
    bars.set_title("\n".join(textwrap.wrap(title, int(width * 11))), fontsize="medium")
    used = [op for op in operations if any(op == s[0] for _, spans in rows for s in spans)]
    figure.legend(
        handles=[Patch(color=colour[op], label=op) for op in used],
        loc="outside lower center",
        ncol=min(max(1, int(width // 2.4)), max(1, len(used))),
        fontsize="small",
        frameon=False,
    )
    if confidence:
        seconds, values = zip(*confidence, strict=True)
        line.plot(seconds, values, marker=".", linewidth=1)
    line.set_ylim(0, 1)
    line.set_ylabel("confidence")
    line.set_xlabel("seconds")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
