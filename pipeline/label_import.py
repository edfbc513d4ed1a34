"""Importing annotations as labels: every video of an archive's annotations becomes that
video's labels, in one transaction; a video the database refuses is rejected alone."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from packsight.labels.annotations import ArchiveAnnotations
from packsight.models.labels import LabelError, replace_video_labels
from packsight.pipeline.context import Context


@dataclass(frozen=True)
class ImportedVideo:
    key: str
    intervals: int
    operations: list[tuple[str, int]]  # most frequent first


@dataclass
class ImportOutcome:
    bucket: str
    taxonomy: str
    imported: list[ImportedVideo] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # each names its file
    unannotated: list[str] = field(default_factory=list)  # "user/session"


def import_annotations(
    ctx: Context,
    annotations: ArchiveAnnotations,
    *,
    bucket: str,
    prefix: str = "",
    verified: bool = True,
) -> ImportOutcome:
    """Make the annotations the labels of their videos in `bucket` (keys under `prefix`)."""

    def record(session: Session) -> ImportOutcome:
        outcome = ImportOutcome(bucket=bucket, taxonomy=annotations.taxonomy)
        outcome.rejected = [reason for _, reason in annotations.rejected]
        outcome.unannotated = [f"{v.user}/{v.session}" for v in annotations.unannotated]
        for video, path, intervals in annotations.videos:
            key = f"{prefix.rstrip('/')}/{video.video_key}" if prefix else video.video_key
            try:
                with session.begin_nested():  # a refused video must not undo the others
                    replace_video_labels(
                        session,
                        bucket=bucket,
                        video_key=key,
                        taxonomy=annotations.taxonomy,
                        intervals=intervals,
                        subject=video.user,
                        session_name=video.session,
                        verified=verified,
                    )
            except LabelError as exc:
                outcome.rejected.append(f"{path}: {exc}")
                continue
            ops = Counter(i.operation for i in intervals).most_common()
            outcome.imported.append(ImportedVideo(key, len(intervals), ops))
        return outcome

    return ctx.transaction(record)
