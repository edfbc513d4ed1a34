"""Turn a model's text answer into a validated `ClipPrediction`.

Models wrap JSON in prose or code fences and sometimes invent operations or frame numbers; every
such case becomes an `OutputParseError` with a message saying what was wrong, never a crash.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import Taxonomy
from packsight.vlm.answer import operation_codes

ZERO_PADDED = re.compile(r'("(?:start|end)_frame"\s*:\s*)0+(\d)')
# Model answers are short; a cap keeps a pathological output (thousands of "{") cheap to scan.
MAX_SCANNED_CHARS = 20_000


class OutputParseError(ValueError):
    """The model's answer is not a valid prediction for this clip; `raw_output` keeps the text."""

    def __init__(self, message: str, raw_output: str = "") -> None:
        super().__init__(message)
        self.raw_output = raw_output


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def find_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in `text` that looks like an answer (prose and fences allowed)."""
    decoder = json.JSONDecoder()
    scanned = text[:MAX_SCANNED_CHARS]
    first_object: dict[str, Any] | None = None
    start = scanned.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(scanned, start)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            if "dominant_operation" in value:
                return value
            first_object = first_object if first_object is not None else value
        start = scanned.find("{", start + 1)
    if first_object is not None:
        return first_object
    raise OutputParseError(f"no JSON object found in the model output: {_shorten(text)!r}")


def _operation(data: dict[str, Any], key: str, taxonomy: Taxonomy) -> str:
    if key not in data:
        raise OutputParseError(f"the answer has no {key!r} field")
    value = data[key]
    canonical = taxonomy.canonical(value) if isinstance(value, str) else None
    if canonical is None and isinstance(value, str):
        # The prompt lists operations by code (A = first operation, ...); accept either form.
        codes = dict(zip(operation_codes(taxonomy), taxonomy.operations, strict=True))
        canonical = codes.get(value.strip().upper())
    if canonical is None:
        known = ", ".join(taxonomy.operations)
        raise OutputParseError(
            f"{key} {value!r} is not an operation of taxonomy {taxonomy.name!r} "
            f"(expected one of: {known})"
        )
    return canonical


def _frame(segment: dict[str, Any], key: str) -> int:
    if key not in segment:
        raise OutputParseError(f"temporal_segment has no {key!r} field")
    value = segment[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutputParseError(f"temporal_segment.{key} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise OutputParseError(f"temporal_segment.{key} must be an integer, got {value!r}")
        value = int(value)
    return value


def _confidence(data: dict[str, Any], given: float | None) -> float:
    value: Any = given if given is not None else data.get("confidence")
    if value is None:
        raise OutputParseError("the answer has no 'confidence' and none was computed")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutputParseError(f"confidence must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise OutputParseError(f"confidence must lie in [0, 1], got {value!r}")
    return value


def parse_prediction(
    text: str,
    *,
    taxonomy: Taxonomy,
    clip_frame_count: int,
    confidence: float | None = None,
) -> ClipPrediction:
    """Validate a model answer for a clip of `clip_frame_count` frames.

    `confidence`, when given, wins over a confidence the model wrote itself: the labeler
    computes it from token probabilities, which self-reported numbers are not.
    """
    if not isinstance(text, str):
        raise OutputParseError(f"model output must be text, got {type(text).__name__}")
    try:
        return _validated(text, taxonomy, clip_frame_count, confidence)
    except OutputParseError as exc:
        exc.raw_output = text  # so the failure can be stored next to what the model said
        raise


def _validated(
    text: str, taxonomy: Taxonomy, clip_frame_count: int, confidence: float | None
) -> ClipPrediction:
    # Frames are asked for with three digits ("start_frame": 007), which JSON forbids.
    data = find_json_object(ZERO_PADDED.sub(r"\1\2", text))
    dominant = _operation(data, "dominant_operation", taxonomy)
    segment = data.get("temporal_segment")
    if not isinstance(segment, dict):
        raise OutputParseError(
            "the answer needs 'temporal_segment' as an object with start_frame and end_frame"
        )
    start, end = _frame(segment, "start_frame"), _frame(segment, "end_frame")
    last = clip_frame_count - 1
    if start < 0:
        raise OutputParseError(f"start_frame {start} is negative")
    if start > end:
        raise OutputParseError(f"start_frame {start} is after end_frame {end}")
    if end > last:
        raise OutputParseError(
            f"end_frame {end} is past the clip's last frame {last} "
            f"(the clip has {clip_frame_count} frames)"
        )
    following = _operation(data, "anticipated_next_operation", taxonomy)
    return ClipPrediction(
        dominant_operation=dominant,
        start_frame=start,
        end_frame=end,
        anticipated_next_operation=following,
        confidence=_confidence(data, confidence),
        raw_output=text,
    )
