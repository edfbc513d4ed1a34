"""Frame intervals (a video's timeline) -> OpenPack operation annotations that `packsight labels
import` reads back as the very same intervals. Pure: intervals in, files out.

An export folder holds one CSV per video, `<root>/<user>/annotation/openpack-operations/
<session>.csv` (OpenPack's columns `uuid,user,session,box,id,operation,start,end,actions`), and
`<root>/sessions.csv` (`user,session,video_key,video_start,fps,frame_count,taxonomy`), which
places each CSV on its video's clock and names the operations' taxonomy.

- Times: a video's recording start is not known to packsight, so every video starts at
  `EXPORT_START` (1970-01-01 00:00:00+00:00) and a time reads as the offset into the video. Frame
  f is at start + f / fps, to the microsecond; reading rounds (time - start) * fps, so a frame
  comes back exactly for any fps below a million (25, 29.97...).
- Names: user and session are the video's subject and session (from its key's layout, else its
  labels); a video without a subject is user `unknown`, one without a session (or whose session
  another video of the export has already) takes its key path as session (`site-a_cam1_day3`).
- Rows: one per interval, background included, in frame order; `id` is the operation's id
  (OpenPack's, else 100 x its position in the taxonomy), `uuid` is derived from the video and
  the interval (exports are repeatable), `box` and `actions` are empty. Frames without an
  interval (clips without an answer) have no row: the import labels them background.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from packsight.labels.annotations import ANNOTATION_DIR, SESSION_COLUMNS, VideoSession
from packsight.labels.taxonomy import Taxonomy, load_taxonomy
from packsight.video.identity import VideoIdentity, clip_prefix

EXPORT_START = datetime(1970, 1, 1, tzinfo=UTC)
OPENPACK_COLUMNS = ("uuid", "user", "session", "box", "id", "operation", "start", "end", "actions")
EXPORT_SESSION_COLUMNS = (*SESSION_COLUMNS, "taxonomy")
SESSIONS_FILE = "sessions.csv"
UNKNOWN_SUBJECT = "unknown"


class ExportError(ValueError):
    """An export folder or a video's intervals cannot be written; the message says which."""


class Span(Protocol):
    # Read-only members, so that frozen dataclasses (TimelineSegment, LabelInterval) match.
    @property
    def operation(self) -> str: ...
    @property
    def start_frame(self) -> int: ...
    @property
    def end_frame(self) -> int: ...  # exclusive


@dataclass(frozen=True)
class ExportedVideo:
    session: VideoSession
    path: Path  # its CSV
    rows: int
    uncovered: int  # frames without an interval: background after an import


def frame_time(frame: int, *, start: datetime, fps: float) -> datetime:
    """The moment of `frame`, to the nearest microsecond (exact arithmetic, no float error)."""
    return start + timedelta(microseconds=round(Fraction(frame * 1_000_000) / Fraction(fps)))


def format_time(moment: datetime) -> str:
    """OpenPack's spelling, `2021-10-14 11:25:35.437000+09:00`."""
    return moment.isoformat(sep=" ", timespec="microseconds")


def prepare_folder(root: Path) -> Path:
    """The export folder: created if missing; refused if it is not an empty, writable folder."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ExportError(f"{root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()):
        raise ExportError(f"{root} is not empty: give a new or empty folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {root}: {exc.strerror or exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise ExportError(f"{root} is not writable")
    return root


def session_names(key: str, identity: VideoIdentity) -> tuple[str, str]:
    """(user, session) of a video in an export (see the module docstring)."""
    user = _safe(identity.subject) or UNKNOWN_SUBJECT
    session = _safe(identity.session) or clip_prefix(key, VideoIdentity(None, None))
    return user, session


def _safe(name: str | None) -> str | None:
    """A name usable as a folder or file name, or None."""
    if not name or not name.strip() or name.strip(".") == "":
        return None
    return name.replace("/", "_").replace("\\", "_")


def operation_rows(
    video: VideoSession, spans: Sequence[Span], *, taxonomy: Taxonomy, origin: str
) -> list[dict[str, str]]:
    """The CSV rows of a video's intervals (sorted, non-overlapping, within the video); an
    empty interval has none. `origin` (bucket/key) seeds the rows' uuids."""
    rows: list[dict[str, str]] = []
    cursor = 0
    for span in sorted(spans, key=lambda s: (s.start_frame, s.end_frame)):
        where = f"{origin} [{span.start_frame}, {span.end_frame})"
        operation = taxonomy.canonical(span.operation)
        if operation is None:
            raise ExportError(f"{where}: {span.operation!r} is not in taxonomy {taxonomy.name!r}")
        if span.end_frame <= span.start_frame:
            continue
        if span.start_frame < cursor or span.end_frame > video.frame_count:
            raise ExportError(
                f"{where} {operation}: overlaps the interval before it or ends past the "
                f"video's {video.frame_count} frames"
            )
        cursor = span.end_frame
        start, end = (
            format_time(frame_time(f, start=video.video_start, fps=video.fps))
            for f in (span.start_frame, span.end_frame)
        )
        name = f"packsight:{origin}#{span.start_frame}-{span.end_frame}"
        rows.append(
            {
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "user": video.user,
                "session": video.session,
                "box": "",
                "id": str(taxonomy.ids.get(operation, taxonomy.index(operation) * 100 + 100)),
                "operation": operation,
                "start": start,
                "end": end,
                "actions": "",
            }
        )
    return rows


class OpenPackWriter:
    """Writes an export folder: `add` a video's CSV at a time, then `finish` the sessions table
    (until then the folder is not an importable export)."""

    def __init__(self, root: Path, taxonomy: str, *, start: datetime = EXPORT_START) -> None:
        """`taxonomy`: the operations' taxonomy as `load_taxonomy` takes it (a name or a path),
        which the sessions table names for the import."""
        self.root, self.start = Path(root), start
        self.taxonomy_name, self.taxonomy = taxonomy, load_taxonomy(taxonomy)
        self.sessions: list[VideoSession] = []
        self._taken: set[tuple[str, str]] = set()

    def add(
        self,
        *,
        key: str,
        identity: VideoIdentity,
        fps: float,
        frame_count: int,
        spans: Sequence[Span],
        origin: str | None = None,
    ) -> ExportedVideo:
        user, session = session_names(key, identity)
        if (user, session) in self._taken:
            session = clip_prefix(key, VideoIdentity(None, None))
        if (user, session) in self._taken:
            raise ExportError(f"{key}: {user}/{session} is already another video's session")
        video = VideoSession(user, session, key, self.start, fps, frame_count)
        rows = operation_rows(video, spans, taxonomy=self.taxonomy, origin=origin or key)
        path = self.root.joinpath(user, *ANNOTATION_DIR, f"{session}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, OPENPACK_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self._taken.add((user, session))
        self.sessions.append(video)
        covered = sum(max(0, s.end_frame - s.start_frame) for s in spans)
        return ExportedVideo(video, path, len(rows), frame_count - covered)

    def finish(self) -> Path:
        """Write `<root>/sessions.csv`, every added video's clock; returns its path."""
        path = self.root / SESSIONS_FILE
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(EXPORT_SESSION_COLUMNS)
            for video in self.sessions:
                writer.writerow(
                    [
                        video.user,
                        video.session,
                        video.video_key,
                        format_time(video.video_start),
                        repr(float(video.fps)),  # the exact float back
                        video.frame_count,
                        self.taxonomy_name,
                    ]
                )
        return path
