"""Timeline segments -> OpenPack operation CSVs and a sessions table, read back by the importer
(packsight.labels.annotations) as the very same frame intervals, at integer and NTSC frame
rates; names, refusals, and the command's usage errors."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from harness import budget

from packsight.labels.annotations import (
    AnnotationError,
    LabelInterval,
    VideoSession,
    fill_gaps,
    load_sessions,
    read_archive,
    to_frame,
)
from packsight.labels.openpack_export import (
    EXPORT_START,
    ExportError,
    OpenPackWriter,
    frame_time,
    prepare_folder,
    session_names,
)
from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.labels.timeline import ClipAnswer, timeline
from packsight.video.identity import VideoIdentity, identity_from_key

ASSIGNMENT = load_taxonomy("assignment")
PACKSIGHT = str(Path(sys.executable).parent / "packsight")


def spans(intervals: list[LabelInterval]) -> list[tuple[str, int, int]]:
    return [(i.operation, i.start_frame, i.end_frame) for i in intervals]


def tiling(rng: random.Random, frame_count: int) -> list[LabelInterval]:
    """Random intervals tiling [0, frame_count), neighbours of different operations."""
    cuts = sorted(rng.sample(range(1, frame_count), 40))
    edges = [0, *cuts, frame_count]
    out, previous = [], None
    for start, end in pairwise(edges):
        operation = rng.choice([op for op in ASSIGNMENT.operations if op != previous])
        out.append(LabelInterval(operation, start, end))
        previous = operation
    return out


@pytest.mark.parametrize("fps", [25.0, 29.97, 30000 / 1001, 59.94, 12.5])
def test_every_frame_comes_back_at_its_time(fps: float) -> None:
    video = VideoSession("U0101", "S0100", "k.mp4", EXPORT_START, fps, 10**9)
    for frame in [*range(0, 5000), *range(10**7, 10**7 + 500), 3 * 60 * 60 * 30]:
        assert to_frame(frame_time(frame, start=EXPORT_START, fps=fps), video) == frame


@pytest.mark.parametrize("fps", [25.0, 29.97, 30000 / 1001])
def test_segments_round_trip_through_the_importer(tmp_path: Path, fps: float) -> None:
    rng = random.Random(fps)
    frame_count = 54_001  # half an hour and more
    whole = tiling(rng, frame_count)
    gapped = [i for n, i in enumerate(tiling(rng, 9_000)) if n % 3 != 1]  # clips with no answer
    # A real timeline's segments (the pipeline's kind), with a clip edge inside a clip.
    clips = [
        ClipAnswer("c0", 0, 125, ClipPrediction("Box Setup", 0, 124, "Tape", 0.9)),
        ClipAnswer("c1", 125, 250, ClipPrediction("Box Setup", 0, 60, "Tape", 0.8)),
        ClipAnswer("c2", 250, 300, ClipPrediction("Tape", 10, 49, "Pack", 0.7)),
    ]
    segments = timeline(clips, [c.prediction for c in clips], fps)
    assert [s.start_frame for s in segments] == [0, 186]

    writer = OpenPackWriter(prepare_folder(tmp_path / "out"), "assignment")
    writer.add(
        key="U0101/video/U0101_S0100.mp4",
        identity=identity_from_key("U0101/video/U0101_S0100.mp4"),
        fps=fps,
        frame_count=frame_count,
        spans=whole,
    )
    gaps = writer.add(
        key="site-a/cam1/day3.mp4",
        identity=VideoIdentity(None, None),
        fps=fps,
        frame_count=9_000,
        spans=gapped,
    )
    assert gaps.uncovered > 0
    writer.add(
        key="U0102_S0200.mp4",
        identity=identity_from_key("U0102_S0200.mp4"),
        fps=fps,
        frame_count=300,
        spans=segments,
    )
    table = load_sessions(writer.finish())
    assert table.taxonomy == "assignment"
    assert sorted(table.videos) == [
        ("U0101", "S0100"),
        ("U0102", "S0200"),
        ("unknown", "site-a_cam1_day3"),
    ]
    read = read_archive(tmp_path / "out", table, taxonomy=load_taxonomy(table.taxonomy))
    assert not read.rejected and not read.unannotated
    back = {video.video_key: spans(intervals) for video, _, intervals in read.videos}
    assert back["U0101/video/U0101_S0100.mp4"] == spans(whole)
    # Frames without an answer come back as the taxonomy's background, the rest as written.
    assert back["site-a/cam1/day3.mp4"] == spans(
        fill_gaps(
            [(i.start_frame, i.end_frame, i.operation) for i in gapped],
            frame_count=9_000,
            background=ASSIGNMENT.background,
        )
    )
    assert back["U0102_S0200.mp4"] == [(s.operation, s.start_frame, s.end_frame) for s in segments]
    assert {v.fps for v, _, _ in read.videos} == {fps}


def test_names_come_from_the_identity_and_never_collide(tmp_path: Path) -> None:
    assert session_names("U0108/kinect/S0500.mp4", identity_from_key("U0108/kinect/S0500.mp4")) == (
        "U0108",
        "S0500",
    )
    assert session_names("a/b.mp4", VideoIdentity("U0101", None)) == ("U0101", "a_b")
    writer = OpenPackWriter(tmp_path, "openpack")
    spans_ = [LabelInterval("Picking", 0, 10)]
    first = writer.add(key="x/S0001.mp4", identity=VideoIdentity("U0101", "S0001"), fps=30,
                       frame_count=10, spans=spans_)  # fmt: skip
    second = writer.add(key="y/S0001.mp4", identity=VideoIdentity("U0101", "S0001"), fps=30,
                        frame_count=10, spans=spans_)  # fmt: skip
    assert (first.session.session, second.session.session) == ("S0001", "y_S0001")
    assert first.session.user == second.session.user == "U0101"


@pytest.mark.parametrize(
    ("intervals", "needle"),
    [
        ([LabelInterval("Picking", 0, 10)], "not in taxonomy 'assignment'"),
        ([LabelInterval("Tape", 0, 10), LabelInterval("Pack", 5, 20)], "overlaps"),
        ([LabelInterval("Tape", 0, 101)], "ends past the video's 100 frames"),
    ],
)
def test_unwritable_intervals_are_refused(
    tmp_path: Path, intervals: list[LabelInterval], needle: str
) -> None:
    writer = OpenPackWriter(tmp_path, "assignment")
    with pytest.raises(ExportError, match=needle):
        writer.add(key="k.mp4", identity=VideoIdentity(None, None), fps=25, frame_count=100,
                   spans=intervals)  # fmt: skip


def test_the_folder_must_be_new_or_empty(tmp_path: Path) -> None:
    assert prepare_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "a" / "b" / "x").write_text("")
    with pytest.raises(ExportError, match="not empty"):
        prepare_folder(tmp_path / "a" / "b")
    with pytest.raises(ExportError, match="is a file"):
        prepare_folder(tmp_path / "a" / "b" / "x")


def test_a_sessions_table_names_one_taxonomy(tmp_path: Path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(
        "user,session,video_key,video_start,fps,frame_count,taxonomy\n"
        "U1,S1,a.mp4,1970-01-01 00:00:00+00:00,25,10,assignment\n"
        "U1,S2,b.mp4,1970-01-01 00:00:00+00:00,25,10,openpack\n"
    )
    with pytest.raises(AnnotationError, match="one taxonomy per table"):
        load_sessions(path)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--format", "openpack"], "give --out DIR"),
        (["--format", "openpack", "--out", "full"], "not empty"),
        (["--format", "openpack", "--out", "out", "--below", "0.5"], "exports whole timelines"),
    ],
)
def test_bad_openpack_options_are_usage_errors(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    result = subprocess.run(
        [PACKSIGHT, "results", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=budget(120),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
