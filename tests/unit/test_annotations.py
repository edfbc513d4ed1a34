"""OpenPack operation CSVs -> frame intervals: alignment, gaps, time zones, errors, mapping, and
the synthetic archive read back exactly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypedDict

import pytest

from packsight.labels.annotations import (
    AnnotationError,
    LabelInterval,
    VideoSession,
    load_sessions,
    parse_operations_csv,
    read_archive,
)
from packsight.labels.mappings import load_mapping, map_intervals, map_operation
from packsight.labels.taxonomy import load_taxonomy
from packsight.video.synth import write_synthetic_archive

OPENPACK = load_taxonomy("openpack")
HEADER = "uuid,user,session,box,id,operation,start,end,actions\n"
START = datetime(2021, 10, 14, 11, 25, 35, 437000, tzinfo=timezone(timedelta(hours=9)))
VIDEO = VideoSession("U0102", "S0500", "U0102/video/S0500.mp4", START, 25.0, 250)  # 10 s


class Sizes(TypedDict):  # write_synthetic_archive's frame size and video lengths
    size: tuple[int, int]
    min_seconds: float
    max_seconds: float


def at(seconds: float, tz_hours: int = 9) -> str:
    moment = (START + timedelta(seconds=seconds)).astimezone(timezone(timedelta(hours=tz_hours)))
    return moment.isoformat(sep=" ")


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = [f"u{i},U0102,S0500,1,0,{op},{s},{e}," for i, (op, s, e) in enumerate(rows)]
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


def spans(intervals: list[LabelInterval]) -> list[tuple[str, int, int]]:
    return [(i.operation, i.start_frame, i.end_frame) for i in intervals]


def test_rows_become_frames_and_gaps_become_null(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "S0500.csv",
        [
            ("Assemble Box", at(1), at(3)),
            ("insert  items", at(3), at(4.5)),
            ("Close Box", at(6), at(8)),
        ],
    )
    assert spans(parse_operations_csv(path, video=VIDEO, taxonomy=OPENPACK)) == [
        ("Null", 0, 25),
        ("Assemble Box", 25, 75),
        ("Insert Items", 75, 112),  # 4.5 s * 25 = 112.5 rounds to even
        ("Null", 112, 150),
        ("Close Box", 150, 200),
        ("Null", 200, 250),
    ]


def test_time_zones_are_honoured_and_rows_are_clipped_to_the_video(tmp_path: Path) -> None:
    # Same instants written in UTC and in UTC-5; rows starting before / ending after the video.
    path = write_csv(
        tmp_path / "S0500.csv",
        [
            ("Picking", at(-5, 0), at(2, 0)),
            ("Scan Label", at(9, -5), at(30, -5)),
            ("Fill out Order", at(40), at(50)),
        ],
    )
    assert spans(parse_operations_csv(path, video=VIDEO, taxonomy=OPENPACK)) == [
        ("Picking", 0, 50),
        ("Null", 50, 225),
        ("Scan Label", 225, 250),
    ]


def test_an_empty_csv_is_all_background(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "S0500.csv", [])
    assert spans(parse_operations_csv(path, video=VIDEO, taxonomy=OPENPACK)) == [("Null", 0, 250)]


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([("Picking", at(0), at(1)), ("Dance", at(1), at(2))], "row 3: unknown operation 'Dance'"),
        ([("Picking", at(2), at(1))], "row 2: end"),
        ([("Picking", at(0), at(2)), ("Close Box", at(1), at(3))], "rows 2 and 3 overlap"),
        ([("Picking", "2021-10-14 11:25:35", at(1))], "has no time zone"),
        ([("Picking", "yesterday", at(1))], "not an ISO-8601 timestamp"),
    ],
)
def test_bad_rows_are_refused_naming_file_and_row(tmp_path: Path, rows, needle) -> None:
    path = write_csv(tmp_path / "S0500.csv", rows)
    with pytest.raises(AnnotationError) as caught:
        parse_operations_csv(path, video=VIDEO, taxonomy=OPENPACK)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "S0500.csv"
    path.write_text("uuid,operation,start\nx,Picking,2021-10-14 11:25:35+09:00\n")
    with pytest.raises(AnnotationError, match="missing column"):
        parse_operations_csv(path, video=VIDEO, taxonomy=OPENPACK)


def test_the_openpack_mapping_covers_both_taxonomies() -> None:
    mapping = load_mapping("openpack-to-assignment")
    assignment = load_taxonomy("assignment")
    assert set(mapping.operations) == set(OPENPACK.operations)
    assert set(mapping.operations.values()) <= set(assignment.operations)
    assert map_operation("Null", mapping) == "Idle"
    assert map_operation("Assemble Box", mapping) == "Box Setup"
    assert map_operation("Insert Items", mapping) == "Put Items"
    with pytest.raises(AnnotationError, match="no entry for 'Dance'"):
        map_operation("Dance", mapping)
    with pytest.raises(AnnotationError, match="unknown mapping"):
        load_mapping("no-such-mapping")


def test_mapping_merges_neighbours_of_the_same_class() -> None:
    mapping = load_mapping("openpack-to-assignment")
    intervals = [
        LabelInterval("Attach Box Label", 0, 10),
        LabelInterval("Attach Shipping Label", 10, 20),
        LabelInterval("Null", 20, 30),
        LabelInterval("Picking", 30, 40),
    ]
    assert spans(map_intervals(intervals, mapping)) == [
        ("Label", 0, 20),
        ("Idle", 20, 30),
        ("Unknown", 30, 40),
    ]


def test_a_mapping_with_holes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    ops = {"Null": "Idle", "Picking": "Nonsense"}
    data = {"name": "b", "source": "openpack", "target": "assignment", "operations": ops}
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"unmapped openpack operations \['Relocate"):
        load_mapping(str(path))


def test_sessions_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(
        "user,session,video_key,video_start,fps,frame_count\n"
        "U0102,S0500,cam/U0102_S0500.mp4,2021-10-14T11:25:35.437+09:00,29.97,900\n"
    )
    table = load_sessions(path)
    video = table.videos["U0102", "S0500"]
    assert (video.video_key, video.fps, video.frame_count) == ("cam/U0102_S0500.mp4", 29.97, 900)
    assert video.video_start == START and table.taxonomy is None
    path.write_text(path.read_text().replace("+09:00", ""))
    with pytest.raises(AnnotationError, match=r"row 2: .* no time zone"):
        load_sessions(path)


def test_the_synthetic_archive_reads_back_exactly(tmp_path: Path) -> None:
    small: Sizes = {"size": (64, 48), "min_seconds": 8, "max_seconds": 14}
    written = write_synthetic_archive(tmp_path, videos=4, seed=5, **small)
    table = load_sessions(tmp_path / "manifest.json")
    report = read_archive(tmp_path, table, taxonomy=load_taxonomy(table.taxonomy or ""))
    assert report.rejected == [] and report.unannotated == []
    got = {video.video_key: spans(intervals) for video, _, intervals in report.videos}
    assert got == {video.key: video.segments for video in written}


def test_a_bad_file_is_rejected_alone(tmp_path: Path) -> None:
    write_synthetic_archive(tmp_path, videos=2, size=(64, 48), min_seconds=3, max_seconds=4)
    table = load_sessions(tmp_path / "manifest.json")
    bad = tmp_path / "U0102" / "annotation" / "openpack-operations" / "S0101.csv"
    with bad.open("a") as handle:  # a row a typo away from a real class
        handle.write("x,U0102,S0101,9,0,Tap,2021-10-14 09:00:00+09:00,2021-10-14 09:00:01+09:00,\n")
    stray = write_csv(bad.parent / "S0999.csv", [])
    report = read_archive(tmp_path, table, taxonomy=load_taxonomy("assignment"))
    assert [v.session for v, _, _ in report.videos] == ["S0100"]
    reasons = dict(report.rejected)
    assert "no start time for U0102/S0999" in reasons[stray] and "--sessions" in reasons[stray]
    assert "unknown operation" in reasons[bad] and str(bad) in reasons[bad]
    assert [v.session for v in report.unannotated] == []
