"""OpenPack operation annotations -> per-video frame intervals, optionally mapped to another
taxonomy. Pure: files in, dataclasses out; the database side is packsight.models.labels.

Annotations: `<root>/<user>/annotation/openpack-operations/<session>.csv`, columns
`uuid,user,session,box,id,operation,start,end,actions`, ISO-8601 times with a time zone.
CSV times only become frames against the video's start time and fps, found in this order:
  - a sidecar `<video stem>.json` beside the video (`{"start": ISO-8601, "fps": 25}`), the video
    found by the archive's layout (`<user>/.../<session>.mp4`, see packsight.video.identity);
  - a `sessions.csv` with columns `user,session,video_key,video_start,fps,frame_count`
    (video_start ISO-8601 with a time zone, e.g. `2021-10-14 11:25:35.437000+09:00`) and
    optionally `taxonomy`, the CSVs' taxonomy (one for the whole table);
  - the synthetic generator's `manifest.json` (`videos[]`: key, user, session, video_start, fps,
    frame_count).
Where a sidecar gives no frame count, the video itself does.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

from packsight.labels.taxonomy import Taxonomy
from packsight.video.identity import identity_from_key

ANNOTATION_DIR = ("annotation", "openpack-operations")
CSV_COLUMNS = ("operation", "start", "end")  # the ones we read; OpenPack has more
SESSION_COLUMNS = ("user", "session", "video_key", "video_start", "fps", "frame_count")
WHERE_STARTS_ARE = (
    'a sidecar <video stem>.json beside the video ({"start": ISO-8601 with a time zone, '
    '"fps": ...}), a sessions table (--sessions sessions.csv), or the archive\'s manifest.json'
)


class AnnotationError(ValueError):
    """An annotation file, sessions table or mapping is unusable; the message names where."""


@dataclass(frozen=True)
class LabelInterval:
    operation: str
    start_frame: int
    end_frame: int  # exclusive


@dataclass(frozen=True)
class VideoSession:
    """Where one recording session's video is and how its clock maps to frames."""

    user: str
    session: str
    video_key: str
    video_start: datetime
    fps: float
    frame_count: int


@dataclass(frozen=True)
class SessionTable:
    videos: dict[tuple[str, str], VideoSession]
    taxonomy: str | None = None  # the manifest says which taxonomy its CSVs use


@dataclass
class ArchiveAnnotations:
    videos: list[tuple[VideoSession, Path, list[LabelInterval]]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # reasons name the file
    unannotated: list[VideoSession] = field(default_factory=list)
    taxonomy: str = ""  # the operations the intervals are in


def parse_time(text: str, *, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise AnnotationError(f"{where}: {text!r} is not an ISO-8601 timestamp") from exc
    if moment.tzinfo is None:
        # A naive time is ambiguous by hours (OpenPack is +09:00); refuse rather than guess.
        raise AnnotationError(f"{where}: timestamp {text!r} has no time zone (e.g. +09:00)")
    return moment


def to_frame(moment: datetime, video: VideoSession) -> int:
    """round((moment - video_start) * fps), clipped to [0, frame_count]."""
    # Integer microseconds and Fractions: float seconds would misround exact frame times.
    micros = (moment - video.video_start) // timedelta(microseconds=1)
    frame = round(Fraction(micros, 1_000_000) * Fraction(video.fps))
    return min(max(frame, 0), video.frame_count)


def parse_operations_csv(
    path: Path, *, video: VideoSession, taxonomy: Taxonomy
) -> list[LabelInterval]:
    """One session's CSV as intervals tiling [0, frame_count); uncovered time is background."""
    rows: list[tuple[datetime, datetime, str, int]] = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{path} row {reader.line_num}"
            name = row["operation"] or ""
            operation = taxonomy.canonical(name)
            if operation is None:
                known = ", ".join(taxonomy.operations)
                raise AnnotationError(
                    f"{where}: unknown operation {name!r} for taxonomy {taxonomy.name!r} "
                    f"(known: {known}); pass the right --taxonomy or fix the row"
                )
            if row.get("session") and row["session"] != video.session:
                raise AnnotationError(
                    f"{where}: row is for session {row['session']!r}, file is {video.session!r}"
                )
            start = parse_time(row["start"] or "", where=where)
            end = parse_time(row["end"] or "", where=where)
            if end < start:
                raise AnnotationError(f"{where}: end {row['end']} is before start {row['start']}")
            rows.append((start, end, operation, reader.line_num))
    rows.sort()
    for (_, end_a, _, line_a), (start_b, _, _, line_b) in pairwise(rows):
        if start_b < end_a:
            raise AnnotationError(f"{path}: rows {line_a} and {line_b} overlap in time")
    spans = [(to_frame(s, video), to_frame(e, video), op) for s, e, op, _ in rows]
    return fill_gaps(spans, frame_count=video.frame_count, background=taxonomy.background)


def fill_gaps(
    spans: list[tuple[int, int, str]], *, frame_count: int, background: str
) -> list[LabelInterval]:
    """Sorted, non-overlapping (start, end, operation) spans plus background in the gaps."""
    out: list[LabelInterval] = []
    cursor = 0
    for start, end, operation in spans:
        if end <= start:  # outside the video, or shorter than half a frame
            continue
        if start > cursor:
            out.append(LabelInterval(background, cursor, start))
        out.append(LabelInterval(operation, start, end))
        cursor = end
    if cursor < frame_count:
        out.append(LabelInterval(background, cursor, frame_count))
    return out


def load_sessions(path: Path) -> SessionTable:
    """A manifest.json or a sessions.csv (see the module docstring), keyed by (user, session)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"sessions table {path} does not exist")
    records, taxonomy = [], None
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            taxonomy = data.get("taxonomy")
            records = [
                (f"{path} videos[{i}]", v | {"video_key": v["key"]})
                for i, v in enumerate(data["videos"])
            ]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise AnnotationError(f"{path}: not a packsight manifest ({exc})") from exc
    else:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in SESSION_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)}")
            records = [(f"{path} row {reader.line_num}", row) for row in reader]
        named = sorted({str(row.get("taxonomy") or "") for _, row in records} - {""})
        if len(named) > 1:
            raise AnnotationError(f"{path}: one taxonomy per table, not {', '.join(named)}")
        taxonomy = named[0] if named else None
    videos: dict[tuple[str, str], VideoSession] = {}
    for where, record in records:
        video = _video_session(record, where=where)
        if (video.user, video.session) in videos:
            raise AnnotationError(f"{where}: {video.user}/{video.session} is listed twice")
        videos[video.user, video.session] = video
    return SessionTable(videos, taxonomy)


def _video_session(record: dict, *, where: str) -> VideoSession:
    try:
        fps, frames = float(record["fps"]), int(record["frame_count"])
        user, session, key = str(record["user"]), str(record["session"]), str(record["video_key"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: needs {', '.join(SESSION_COLUMNS)} ({exc})") from exc
    if fps <= 0 or frames < 0 or not (user and session and key):
        raise AnnotationError(f"{where}: needs fps > 0, frame_count >= 0 and non-empty names")
    start = parse_time(str(record.get("video_start") or ""), where=where)
    return VideoSession(user, session, key, start, fps, frames)


def locate_sessions(
    root: Path, table: SessionTable | None, *, frame_count: Callable[[Path], int]
) -> SessionTable:
    """The sessions of the videos under `root`: those of `table` (a sessions.csv or manifest),
    where a video whose key shows a subject and a session has a sidecar JSON, the sidecar's.
    `frame_count(path)` counts a video's frames where the sidecar does not say."""
    from packsight.video.decode import is_video_key  # decord: only when videos are looked for

    videos = dict(table.videos) if table is not None else {}
    for path in sorted(p for p in Path(root).rglob("*") if is_video_key(p.name)):
        key = path.relative_to(root).as_posix()
        identity = identity_from_key(key)
        sidecar = path.with_suffix(".json")
        if identity.subject is None or identity.session is None or not sidecar.is_file():
            continue
        where = str(sidecar)
        try:
            data = json.loads(sidecar.read_text())
            fps = float(data["fps"])
            start = parse_time(str(data["start"]), where=where)
            stated = int(data["frame_count"]) if "frame_count" in data else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AnnotationError(
                f'{where}: needs {{"start": ISO-8601, "fps": ...}} ({exc})'
            ) from exc
        if not fps > 0:  # also refuses NaN
            raise AnnotationError(f"{where}: fps must be positive, got {fps}")
        frames = stated if stated is not None else frame_count(path)
        videos[identity.subject, identity.session] = VideoSession(
            identity.subject, identity.session, key, start, fps, frames
        )
    return SessionTable(videos, table.taxonomy if table is not None else None)


def discover_annotations(root: Path) -> dict[tuple[str, str], Path]:
    """(user, session) -> CSV for every `<root>/<user>/annotation/openpack-operations/*.csv`."""
    pattern = f"*/{'/'.join(ANNOTATION_DIR)}/*.csv"
    return {(p.parents[2].name, p.stem): p for p in sorted(Path(root).glob(pattern))}


def read_archive(
    root: Path,
    sessions: SessionTable,
    *,
    taxonomy: Taxonomy,
) -> ArchiveAnnotations:
    """Every annotated session under root as intervals; a bad file is rejected alone."""
    result = ArchiveAnnotations(taxonomy=taxonomy.name)
    found = discover_annotations(root)
    for (user, session), path in found.items():
        video = sessions.videos.get((user, session))
        if video is None:
            result.rejected.append(
                (path, f"{path}: no start time for {user}/{session}: give {WHERE_STARTS_ARE}")
            )
            continue
        try:
            intervals = parse_operations_csv(path, video=video, taxonomy=taxonomy)
        except (AnnotationError, OSError, csv.Error, UnicodeDecodeError) as exc:
            result.rejected.append((path, str(exc)))
            continue
        result.videos.append((video, path, intervals))
    result.unannotated = [v for k, v in sessions.videos.items() if k not in found]
    return result
