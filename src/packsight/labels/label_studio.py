"""Label Studio, both ways: clips as tasks (the video, the model's answers as timeline segments
a reviewer accepts or corrects) and Label Studio's JSON export back as intervals of video
frames. Pure: dictionaries in and out; the HTTP side is Label Studio's own.

Frames: a task shows the whole video, so a reviewer sees what comes before and after the clip;
its `data` says which window to check and which bucket and key the video is. Label Studio
counts a video's frames from 1 and a timeline range includes both ends; packsight counts from
0 with the end excluded, so packsight's [start, end) is Label Studio's start + 1 .. end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME = "operation"  # the TimelineLabels control
TO_NAME = "video"  # the Video object
RESULT_TYPE = "timelinelabels"


class LabelStudioError(ValueError):
    """An export that is not Label Studio's JSON of packsight's tasks; the message says where."""


@dataclass(frozen=True)
class Span:
    """An operation over video frames [start_frame, end_frame), packsight's way."""

    operation: str
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class ReviewedSpan:
    bucket: str
    video_key: str
    taxonomy: str
    span: Span


def labeling_config(operations: Sequence[str], *, taxonomy: str) -> str:
    """The project's labelling interface: the video with its frame rate, and one timeline
    label per operation of the taxonomy."""
    labels = "\n".join(f"    <Label value={quoteattr(op)}/>" for op in operations)
    return (
        "<View>\n"
        f'  <Header value="$clip_id: check $start_s s to $end_s s ({taxonomy})"/>\n'
        f'  <Video name="{TO_NAME}" value="$video" frameRate="$fps" timelineHeight="120"/>\n'
        f'  <TimelineLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </TimelineLabels>\n"
        "</View>\n"
    )


def result(span: Span, *, region_id: str) -> dict[str, Any]:
    """One timeline region of a prediction or an annotation."""
    return {
        "id": region_id,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": RESULT_TYPE,
        "value": {
            "ranges": [{"start": span.start_frame + 1, "end": span.end_frame}],
            "timelinelabels": [span.operation],
        },
    }


def task(
    *,
    video_url: str,
    data: dict[str, Any],
    predicted: Iterable[Span],
    model_version: str,
    score: float | None = None,
) -> dict[str, Any]:
    """A task for one clip: `data` must say bucket, video_key, taxonomy and fps (the importer
    needs them back); the model's spans become a prediction the reviewer starts from."""
    for needed in ("bucket", "video_key", "taxonomy", "fps"):
        if needed not in data:
            raise ValueError(f"a task's data needs {needed!r}")
    regions = [
        result(span, region_id=f"{data.get('clip_id', 'clip')}-{i}")
        for i, span in enumerate(predicted)
    ]
    prediction: dict[str, Any] = {"model_version": model_version, "result": regions}
    if score is not None:
        prediction["score"] = score
    return {"data": {"video": video_url, **data}, "predictions": [prediction]}


def reviewed_spans(export: object) -> list[ReviewedSpan]:
    """The people's spans in Label Studio's JSON export of packsight's tasks: per task its
    newest annotation that was not cancelled. Tasks nobody annotated give nothing."""
    if not isinstance(export, list):
        raise LabelStudioError("expected Label Studio's JSON export: a list of tasks")
    spans: list[ReviewedSpan] = []
    for number, item in enumerate(export, start=1):
        where = f"task {item.get('id', number) if isinstance(item, dict) else number}"
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise LabelStudioError(f"{where}: not a task with data")
        data = item["data"]
        missing = [k for k in ("bucket", "video_key", "taxonomy") if not data.get(k)]
        if missing:
            raise LabelStudioError(
                f"{where}: data lacks {', '.join(missing)}; was it exported by packsight?"
            )
        annotation = _newest(item.get("annotations") or [], where)
        if annotation is None:
            continue
        for region in annotation.get("result") or []:
            for span in _spans(region, where):
                spans.append(
                    ReviewedSpan(
                        str(data["bucket"]), str(data["video_key"]), str(data["taxonomy"]), span
                    )
                )
    return spans


def _newest(annotations: list[Any], where: str) -> dict[str, Any] | None:
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    # Ids grow with time in Label Studio; an export without ids keeps its order.
    return max(enumerate(kept), key=lambda p: (_number(p[1].get("id"), where), p[0]))[1]


def _number(value: object, where: str) -> int:
    if value is None:
        return -1
    if not isinstance(value, int):
        raise LabelStudioError(f"{where}: annotation id {value!r} is not a number")
    return value


def _spans(region: object, where: str) -> list[Span]:
    if not isinstance(region, dict) or region.get("type") != RESULT_TYPE:
        return []  # another control's result (a comment, a rating): not a label
    value = region.get("value") or {}
    names = value.get("timelinelabels") or []
    if len(names) != 1 or not isinstance(names[0], str):
        raise LabelStudioError(f"{where}: a timeline region needs exactly one operation")
    spans = []
    for frames in value.get("ranges") or []:
        start, end = frames.get("start"), frames.get("end")
        if not isinstance(start, int) or not isinstance(end, int) or not 1 <= start <= end:
            raise LabelStudioError(f"{where}: range {frames!r} is not 1 <= start <= end frames")
        spans.append(Span(names[0], start - 1, end))
    return spans
