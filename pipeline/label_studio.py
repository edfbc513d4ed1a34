"""The review loop through Label Studio: clips out as tasks (their video at a URL a browser can
open, pre-signed on S3), people's timeline labels back in as verified corrections, which the
next training run learns from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from packsight.labels.label_studio import ReviewedSpan, Span, reviewed_spans, task
from packsight.labels.taxonomy import TaxonomyError
from packsight.models.labels import LabelError, add_correction
from packsight.pipeline.context import Context
from packsight.pipeline.review import ReviewClip

URL_EXPIRES_S = 7 * 24 * 3600  # the longest S3's signature allows: a review takes days


def label_studio_tasks(
    ctx: Context, clips: list[ReviewClip], *, expires_s: int = URL_EXPIRES_S
) -> list[dict[str, Any]]:
    """One Label Studio task per clip, the model's timeline over the clip's window as its
    prediction."""
    tasks = []
    for clip in clips:
        start, end = clip.clip.start_frame, clip.clip.end_frame
        predicted = [
            Span(s.operation, max(s.start_frame, start), min(s.end_frame, end))
            for s in clip.segments
        ]
        review = clip.to_json()
        data = {
            "clip_id": review["clip_id"],
            "bucket": clip.video.bucket,
            "video_key": clip.video.key,
            "taxonomy": clip.taxonomy,
            "fps": clip.video.fps,
            "frame_count": clip.video.frame_count,
            "start_frame": review["start_frame"],
            "end_frame": review["end_frame"],
            "start_s": review["start_s"],
            "end_s": review["end_s"],
            "why": "; ".join(review["reasons"]),
        }
        url = ctx.storage.url(clip.video.bucket, clip.video.key, expires_s=expires_s)
        tasks.append(
            task(
                video_url=url,
                data=data,
                predicted=predicted,
                model_version=clip.version,
                score=clip.answer.confidence,
            )
        )
    return tasks


@dataclass
class ReviewImport:
    videos: dict[str, int] = field(default_factory=dict)  # "bucket/key" -> spans stored
    rejected: list[str] = field(default_factory=list)  # each names its video


def import_label_studio(ctx: Context, export: object) -> ReviewImport:
    """Store the people's spans of a Label Studio export as verified corrections (they win over
    imported annotations where they overlap); a video the database refuses is rejected alone.
    Importing the same export again leaves the same labels."""
    by_video: dict[tuple[str, str], list[ReviewedSpan]] = defaultdict(list)
    for reviewed in reviewed_spans(export):
        by_video[(reviewed.bucket, reviewed.video_key)].append(reviewed)

    def record(session: Session) -> ReviewImport:
        outcome = ReviewImport()
        for (bucket, key), spans in sorted(by_video.items()):
            try:
                with session.begin_nested():  # a refused video must not undo the others
                    for reviewed in spans:
                        add_correction(
                            session,
                            bucket=bucket,
                            video_key=key,
                            operation=reviewed.span.operation,
                            start_frame=reviewed.span.start_frame,
                            end_frame=reviewed.span.end_frame,
                            taxonomy=reviewed.taxonomy,
                        )
            except (LabelError, TaxonomyError) as exc:
                outcome.rejected.append(f"{bucket}/{key}: {exc}")
                continue
            outcome.videos[f"{bucket}/{key}"] = len(spans)
        return outcome

    return ctx.transaction(record)
