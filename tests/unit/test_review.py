"""Which clips the review queue puts first, and Label Studio's tasks and exports both ways."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from packsight.labels.label_studio import (
    LabelStudioError,
    Span,
    labeling_config,
    reviewed_spans,
    task,
)
from packsight.labels.prediction import ClipPrediction
from packsight.labels.review import covered, doubt, top_two

OPS = ("pick", "pack", "tape")


def answer(op: str, confidence: float, probabilities: tuple[float, ...] | None = None):
    return ClipPrediction(op, 0, 10, op, confidence, operation_probabilities=probabilities)


def test_top_two_orders_by_probability() -> None:
    assert top_two((0.2, 0.5, 0.3), OPS) == (("pack", 0.5), ("tape", 0.3))
    with pytest.raises(ValueError):
        top_two((1.0,), OPS)


def test_a_close_call_outranks_a_clear_one_of_equal_confidence() -> None:
    clear = doubt(answer("pack", 0.6, (0.05, 0.6, 0.35)), OPS)
    close = doubt(answer("pack", 0.6, (0.0, 0.6, 0.4)), OPS)
    assert close.score > clear.score
    assert close.margin == pytest.approx(0.2)
    assert any("top-2 margin 0.20 (pack 0.60, tape 0.40)" in r for r in close.reasons)


def test_each_disagreement_adds_and_says_who_disagrees() -> None:
    sure = answer("pack", 0.9, (0.05, 0.9, 0.05))
    alone = doubt(sure, OPS)
    prior = doubt(sure, OPS, smoothed=answer("tape", 0.5))
    both = doubt(
        sure, OPS, smoothed=answer("tape", 0.5), other=answer("pick", 0.7), other_name="v2"
    )
    assert alone.score < prior.score < both.score
    assert both.score == pytest.approx(alone.score + 2.0)
    assert "the prior says tape, the model pack" in both.reasons
    assert "v2 says pick" in both.reasons
    # Agreement adds nothing.
    assert doubt(sure, OPS, smoothed=sure, other=sure).score == alone.score
    # A contradicted confident answer outranks an unsure one nobody contradicts.
    assert prior.score > doubt(answer("pack", 0.4, (0.3, 0.4, 0.3)), OPS).score
    # Without probabilities, the confidence is the uncertainty.
    assert doubt(answer("pack", 0.7), OPS).score == pytest.approx(0.3)


def test_a_clip_is_reviewed_when_people_labelled_half_of_it() -> None:
    assert covered((100, 200), [(0, 150)])
    assert covered((100, 200), [(100, 120), (180, 200)]) is False
    assert covered((100, 200), [(90, 130), (160, 200)])
    assert not covered((100, 200), [(190, 400)])


def test_the_labelling_config_names_every_operation_once() -> None:
    root = ET.fromstring(labeling_config(("Box Setup", 'Say "hi" & go'), taxonomy="t"))
    video = root.find("Video")
    assert video is not None and video.get("frameRate") == "$fps"
    labels = root.find("TimelineLabels")
    assert labels is not None and labels.get("toName") == video.get("name")
    assert [label.get("value") for label in labels] == ["Box Setup", 'Say "hi" & go']


def test_task_frames_and_export_frames_meet() -> None:
    """What a task predicts, accepted unchanged by a reviewer, imports to the same frames."""
    data = {"clip_id": "c1", "bucket": "b", "video_key": "v.mp4", "taxonomy": "t", "fps": 25.0}
    made = task(
        video_url="http://x/v.mp4",
        data=data,
        predicted=[Span("pack", 0, 25), Span("tape", 25, 125)],
        model_version="v3",
        score=0.4,
    )
    assert made["data"]["video"] == "http://x/v.mp4"
    regions = made["predictions"][0]["result"]
    assert regions[0]["value"]["ranges"] == [{"start": 1, "end": 25}]
    exported = [{"id": 7, "data": made["data"], "annotations": [{"id": 1, "result": regions}]}]
    spans = [r.span for r in reviewed_spans(exported)]
    assert spans == [Span("pack", 0, 25), Span("tape", 25, 125)]
    with pytest.raises(ValueError, match="bucket"):
        task(video_url="u", data={"video_key": "k"}, predicted=[], model_version="v")


def test_the_newest_annotation_that_was_not_cancelled_counts() -> None:
    data = {"bucket": "b", "video_key": "v.mp4", "taxonomy": "t"}

    def region(op: str, start: int, end: int) -> dict:
        return {
            "type": "timelinelabels",
            "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [op]},
        }

    export = [
        {
            "id": 1,
            "data": data,
            "annotations": [
                {"id": 3, "result": [region("pack", 1, 10)]},
                {"id": 5, "result": [region("tape", 1, 10), {"type": "textarea"}]},
                {"id": 9, "was_cancelled": True, "result": [region("pick", 1, 10)]},
            ],
        },
        {"id": 2, "data": data, "annotations": []},  # nobody looked: nothing
    ]
    assert [(r.video_key, r.span) for r in reviewed_spans(export)] == [
        ("v.mp4", Span("tape", 0, 10))
    ]


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ({"tasks": []}, "a list of tasks"),
        ([{"id": 4, "data": {"bucket": "b"}}], "task 4: data lacks video_key, taxonomy"),
        (
            [
                {
                    "data": {"bucket": "b", "video_key": "k", "taxonomy": "t"},
                    "annotations": [
                        {
                            "result": [
                                {
                                    "type": "timelinelabels",
                                    "value": {
                                        "ranges": [{"start": 0, "end": 3}],
                                        "timelinelabels": ["x"],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "task 1: range",
        ),
    ],
)
def test_an_export_packsight_cannot_read_says_where(export: object, message: str) -> None:
    with pytest.raises(LabelStudioError, match=message):
        reviewed_spans(export)
