"""A labelled video's timeline: its clips' answers under one model version, smoothed with the
transition prior that version was trained with, as ordered segments with absolute frames and
seconds; the raw per-clip answers stay beside the smoothed ones. A version without a prior (the
base model) gives the timeline of its raw answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from packsight.labels.prediction import ClipPrediction
from packsight.labels.prior import TransitionPrior
from packsight.labels.taxonomy import load_taxonomy
from packsight.labels.timeline import ClipAnswer, TimelineSegment, smooth, timeline
from packsight.labels.timeline_plot import render_timeline_png
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus, Video
from packsight.models.tables.labels import Label
from packsight.models.tables.versions import ModelVersion


class NoTimelineError(LookupError):
    """The video has no labelled clips (under the version asked for)."""


@dataclass(frozen=True)
class VideoTimeline:
    video: Video
    version: ModelVersion
    prior: TransitionPrior | None
    clips: list[ClipAnswer]
    smoothed: list[ClipPrediction | None]
    labels: list[tuple[str, int, int]]  # the labelled truth: (operation, start, end) frames

    @property
    def segments(self) -> list[TimelineSegment]:
        return timeline(self.clips, self.smoothed, self.video.fps)

    @property
    def raw_segments(self) -> list[TimelineSegment]:
        return timeline(self.clips, [c.prediction for c in self.clips], self.video.fps)

    def to_json(self) -> dict[str, Any]:
        fps = self.video.fps
        return {
            "video_id": self.video.id,
            "bucket": self.video.bucket,
            "key": self.video.key,
            "fps": fps,
            "frame_count": self.video.frame_count,
            "model_version": self.version.name,
            "prior": self.prior is not None,
            "segments": [s.to_json() for s in self.segments],
            "labels": [
                {
                    "operation": op,
                    "start_frame": start,
                    "end_frame": end,
                    "start_s": round(start / fps, 3),
                    "end_s": round(end / fps, 3),
                }
                for op, start, end in self.labels
            ],
            "raw_segments": [s.to_json() for s in self.raw_segments],
            "clips": [
                {
                    "clip_id": clip.clip_id,
                    "start_frame": clip.start_frame,
                    "end_frame": clip.end_frame - 1,
                    "start_s": round(clip.start_frame / fps, 3),
                    "end_s": round(clip.end_frame / fps, 3),
                    "raw": _answer(clip.prediction),
                    "smoothed": _answer(smoothed),
                }
                for clip, smoothed in zip(self.clips, self.smoothed, strict=True)
            ],
        }

    def png(self) -> bytes:
        """The smoothed timeline over the raw answers (and the labels, when there are), with
        each clip's confidence beneath."""
        fps = self.video.fps

        def spans(segments: list[TimelineSegment]) -> list[tuple[str, float, float]]:
            return [(s.operation, s.start_s, s.end_s) for s in segments]

        rows = [
            ("timeline, prior" if self.prior else "timeline", spans(self.segments)),
            ("raw answers", spans(self.raw_segments)),
        ]
        if self.labels:
            rows.append(("labels", [(op, s / fps, e / fps) for op, s, e in self.labels]))
        confidence = [
            ((clip.start_frame + clip.end_frame) / 2 / fps, answer.confidence)
            for clip, answer in zip(self.clips, self.smoothed, strict=True)
            if answer is not None
        ]
        return render_timeline_png(
            rows,
            load_taxonomy(self.version.taxonomy).operations,
            confidence,
            duration_s=self.video.duration_s,
            title=f"{self.video.bucket}/{self.video.key}: {self.version.name}",
        )


def find_video(session: Session, key: str, bucket: str | None = None) -> Video | None:
    """The latest recording under `key` (in `bucket`, if given) that has clips."""
    query = select(Video).where(Video.key == key, Video.id.in_(select(Clip.video_id)))
    if bucket is not None:
        query = query.where(Video.bucket == bucket)
    return session.scalars(query.order_by(Video.created_at.desc(), Video.id.desc())).first()


def video_timeline(
    session: Session, video: Video, *, model_version_id: int | None = None
) -> VideoTimeline:
    """The timeline of `video` under `model_version_id`, by default the version that labelled
    it last."""
    labelled = (
        select(Prediction.model_version_id)
        .join(Clip, Clip.id == Prediction.clip_id)
        .where(Clip.video_id == video.id, Prediction.status == PredictionStatus.OK)
    )
    if model_version_id is None:
        model_version_id = session.scalar(
            labelled.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(1)
        )
    elif not session.scalar(
        select(func.count()).select_from(
            labelled.where(Prediction.model_version_id == model_version_id).subquery()
        )
    ):
        model_version_id = None
    if model_version_id is None:
        raise NoTimelineError(f"video {video.bucket}/{video.key} has no labelled clips")
    version = session.get_one(ModelVersion, model_version_id)
    rows = session.execute(
        select(Clip, Prediction)
        .join(Prediction, Prediction.clip_id == Clip.id)
        .where(Clip.video_id == video.id, Prediction.model_version_id == version.id)
        .order_by(Clip.start_frame, Clip.id)
    ).all()
    clips = [
        ClipAnswer(clip.clip_key, clip.start_frame, clip.end_frame, stored_answer(prediction))
        for clip, prediction in rows
    ]
    stored = (version.settings or {}).get("prior")
    prior = TransitionPrior.from_json(stored) if stored else None
    smoothed = smooth(clips, prior) if prior is not None else [c.prediction for c in clips]
    labels = session.execute(
        select(Label.operation, Label.start_frame, Label.end_frame)
        .where(
            Label.bucket == video.bucket,
            Label.video_key == video.key,
            Label.taxonomy == version.taxonomy,
        )
        .order_by(Label.start_frame)
    ).all()
    truth = [(op, start, end) for op, start, end in labels]
    return VideoTimeline(video, version, prior, clips, smoothed, truth)


def stored_answer(row: Prediction) -> ClipPrediction | None:
    """A prediction row as the answer it holds; None for a failed one."""
    if row.status != PredictionStatus.OK:
        return None
    assert row.dominant_operation and row.anticipated_next_operation, "a label names both"
    assert row.start_frame is not None and row.end_frame is not None
    assert row.confidence is not None
    return ClipPrediction(
        dominant_operation=row.dominant_operation,
        start_frame=row.start_frame,
        end_frame=row.end_frame,
        anticipated_next_operation=row.anticipated_next_operation,
        confidence=row.confidence,
        operation_probabilities=tuple(row.operation_probabilities or ()) or None,
        next_probabilities=tuple(row.next_probabilities or ()) or None,
    )


def _answer(prediction: ClipPrediction | None) -> dict[str, Any] | None:
    if prediction is None:
        return None
    return {
        "dominant_operation": prediction.dominant_operation,
        "temporal_segment": {
            "start_frame": prediction.start_frame,
            "end_frame": prediction.end_frame,
        },
        "anticipated_next_operation": prediction.anticipated_next_operation,
        "confidence": round(prediction.confidence, 4),
    }
