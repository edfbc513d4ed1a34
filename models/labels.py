"""Ground-truth labels of a video: imported annotation intervals and human corrections.

A human correction supersedes whatever it overlaps (annotation or an older correction), and a
re-import of annotations keeps the corrections: imported intervals are cut around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from packsight.labels.taxonomy import load_taxonomy
from packsight.models.tables.labels import Label
from packsight.video.identity import VideoIdentity

HUMAN = "human"
ANNOTATION = "annotation"


class LabelError(ValueError):
    """A label write that would leave the video's labels inconsistent; the message says why."""


class Interval(Protocol):
    # Read-only members, so that frozen dataclasses (LabelInterval) match too.
    @property
    def operation(self) -> str: ...
    @property
    def start_frame(self) -> int: ...
    @property
    def end_frame(self) -> int: ...


def _lock_video(session: Session, *, bucket: str, video_key: str) -> None:
    # Corrections read-then-split rows; two at once on one video could split the same row twice.
    # Row locks miss rows the other transaction inserts, so serialise per video instead.
    # (SQLite has a single writer already.)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"{bucket}/{video_key}", 0)))
        )


def _check_taxonomy(session: Session, *, bucket: str, video_key: str, taxonomy: str) -> None:
    others = session.scalars(
        select(Label.taxonomy)
        .where(Label.bucket == bucket, Label.video_key == video_key, Label.taxonomy != taxonomy)
        .limit(1)
    ).first()
    if others is not None:
        raise LabelError(
            f"{bucket}/{video_key} is labelled in taxonomy {others!r}, not {taxonomy!r}; "
            "one video's labels share one taxonomy (import with the matching --map/--taxonomy)"
        )


def video_taxonomy(session: Session, *, bucket: str, video_key: str) -> str | None:
    """The taxonomy the video's labels are in, or None when it has none."""
    return session.scalars(
        select(Label.taxonomy).where(Label.bucket == bucket, Label.video_key == video_key).limit(1)
    ).first()


def labelled_identity(session: Session, *, bucket: str, video_key: str) -> VideoIdentity:
    """The subject and session an import recorded for the video (None where it recorded none)."""
    row = session.execute(
        select(Label.subject, Label.session)
        .where(Label.bucket == bucket, Label.video_key == video_key)
        .order_by(Label.subject.is_(None), Label.session.is_(None))
        .limit(1)
    ).first()
    return VideoIdentity(row[0], row[1]) if row else VideoIdentity(None, None)


def _subtract(start: int, end: int, cuts: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) outside every [cut_start, cut_end)."""
    pieces = [(start, end)]
    for cut_start, cut_end in cuts:
        pieces = [
            part
            for s, e in pieces
            for part in ((s, min(e, cut_start)), (max(s, cut_end), e))
            if part[0] < part[1]
        ]
    return pieces


def replace_video_labels(
    session: Session,
    *,
    bucket: str,
    video_key: str,
    taxonomy: str,
    intervals: Sequence[Interval],
    source: str = ANNOTATION,
    subject: str | None = None,
    session_name: str | None = None,
    verified: bool = False,
) -> list[Label]:
    """Make `intervals` the video's labels of `source`, replacing that source's earlier ones.

    Idempotent: importing the same annotations again leaves the same rows. Human corrections
    of the video are kept and win where they overlap.
    """
    _lock_video(session, bucket=bucket, video_key=video_key)
    session.execute(
        delete(Label).where(
            Label.bucket == bucket, Label.video_key == video_key, Label.source == source
        )
    )
    # After the delete: a re-import may switch taxonomy (another --map) unless other rows,
    # e.g. human corrections, are in the old one.
    _check_taxonomy(session, bucket=bucket, video_key=video_key, taxonomy=taxonomy)
    cuts: list[tuple[int, int]] = []
    if source != HUMAN:
        cuts = [
            (start, end)
            for start, end in session.execute(
                select(Label.start_frame, Label.end_frame).where(
                    Label.bucket == bucket, Label.video_key == video_key, Label.source == HUMAN
                )
            )
        ]
    rows = [
        Label(
            bucket=bucket,
            video_key=video_key,
            subject=subject,
            session=session_name,
            taxonomy=taxonomy,
            operation=interval.operation,
            start_frame=start,
            end_frame=end,
            source=source,
            verified=verified,
        )
        for interval in intervals
        for start, end in _subtract(interval.start_frame, interval.end_frame, cuts)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def add_correction(
    session: Session,
    *,
    bucket: str,
    video_key: str,
    operation: str,
    start_frame: int,
    end_frame: int,
    taxonomy: str,
) -> Label:
    """Store one human-verified interval; overlapping labels are trimmed or split around it."""
    known = load_taxonomy(taxonomy)
    canonical = known.canonical(operation)
    if canonical is None:
        raise LabelError(
            f"unknown operation {operation!r} in taxonomy {known.name!r}; "
            f"use one of: {', '.join(known.operations)}"
        )
    if not 0 <= start_frame < end_frame:
        raise LabelError(f"need 0 <= start_frame < end_frame, got {start_frame}, {end_frame}")
    _lock_video(session, bucket=bucket, video_key=video_key)
    _check_taxonomy(session, bucket=bucket, video_key=video_key, taxonomy=known.name)
    overlapping = session.scalars(
        select(Label).where(
            Label.bucket == bucket,
            Label.video_key == video_key,
            Label.start_frame < end_frame,
            Label.end_frame > start_frame,
        )
    ).all()
    subject = session_name = None
    for row in overlapping:
        subject, session_name = subject or row.subject, session_name or row.session
        pieces = _subtract(row.start_frame, row.end_frame, [(start_frame, end_frame)])
        if not pieces:
            session.delete(row)
            continue
        row.start_frame, row.end_frame = pieces[0]
        for start, end in pieces[1:]:  # the correction fell inside the row: keep its tail
            session.add(_copy(row, start_frame=start, end_frame=end))
    label = Label(
        bucket=bucket,
        video_key=video_key,
        subject=subject,
        session=session_name,
        taxonomy=known.name,
        operation=canonical,
        start_frame=start_frame,
        end_frame=end_frame,
        source=HUMAN,
        verified=True,
    )
    session.add(label)
    session.flush()
    return label


def _copy(row: Label, *, start_frame: int, end_frame: int) -> Label:
    return Label(
        bucket=row.bucket,
        video_key=row.video_key,
        subject=row.subject,
        session=row.session,
        taxonomy=row.taxonomy,
        operation=row.operation,
        start_frame=start_frame,
        end_frame=end_frame,
        source=row.source,
        verified=row.verified,
    )


def video_labels(session: Session, *, bucket: str, video_key: str) -> list[Label]:
    """The video's labels in frame order (they do not overlap)."""
    return list(
        session.scalars(
            select(Label)
            .where(Label.bucket == bucket, Label.video_key == video_key)
            .order_by(Label.start_frame, Label.id)
        )
    )
