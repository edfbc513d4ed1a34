"""The review queue: a bucket's (or one job's) labelled clips ranked by how much a person's
check is worth (packsight.labels.review), leaving out clips people have labelled already. Each
video is read as its timeline (the serving answers, smoothed with their version's prior), and
beside it the newest answer of any other version for the same clips (a candidate's, when the
bucket was labelled with it too). The answers reviewed are the serving version's where it
labelled the video, else those of the version that labelled it last."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.labels.prediction import ClipPrediction
from packsight.labels.review import Doubt, covered, doubt
from packsight.labels.taxonomy import load_taxonomy
from packsight.labels.timeline import ClipAnswer, TimelineSegment
from packsight.models.labels import HUMAN
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus, Video
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.labels import Label
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.timelines import NoTimelineError, stored_answer, video_timeline


@dataclass(frozen=True)
class ReviewClip:
    video: Video
    clip: ClipAnswer
    version: str  # the model version whose answer is reviewed
    taxonomy: str
    answer: ClipPrediction
    smoothed: ClipPrediction | None
    doubt: Doubt
    segments: list[TimelineSegment]  # the timeline's segments over the clip's window

    def to_json(self) -> dict[str, Any]:
        fps = self.video.fps
        return {
            "clip_id": self.clip.clip_id,
            "bucket": self.video.bucket,
            "video_key": self.video.key,
            "video_id": self.video.id,
            "start_frame": self.clip.start_frame,
            "end_frame": self.clip.end_frame - 1,  # inclusive, as in results
            "start_s": round(self.clip.start_frame / fps, 3),
            "end_s": round(self.clip.end_frame / fps, 3),
            "model_version": self.version,
            "dominant_operation": self.answer.dominant_operation,
            "confidence": round(self.answer.confidence, 4),
            "smoothed_operation": self.smoothed.dominant_operation if self.smoothed else None,
            "score": self.doubt.score,
            "margin": self.doubt.margin,
            "reasons": list(self.doubt.reasons),
        }


@dataclass
class ReviewQueue:
    bucket: str
    clips: list[ReviewClip] = field(default_factory=list)  # most worth a check first
    considered: int = 0  # labelled clips looked at
    reviewed: int = 0  # of those, already labelled by people (left out)


def review_queue(
    session: Session, *, bucket: str, job: Job | None = None, limit: int | None = 50
) -> ReviewQueue:
    """The `limit` clips (all with None) of `bucket`, or of `job`'s videos, most worth a check."""
    queue = ReviewQueue(bucket=bucket)
    candidates: list[ReviewClip] = []
    for video in _videos(session, bucket, job):
        try:
            found = video_timeline(
                session,
                video,
                model_version_id=job.model_version_id if job else _serving(session, video),
            )
        except NoTimelineError:
            continue
        operations = load_taxonomy(found.version.taxonomy).operations
        others = _other_answers(session, video, found.version.id)
        checked = _checked(session, video)
        segments = found.segments
        for clip, smoothed in zip(found.clips, found.smoothed, strict=True):
            if clip.prediction is None:
                continue
            queue.considered += 1
            if covered((clip.start_frame, clip.end_frame), checked):
                queue.reviewed += 1
                continue
            other = others.get((clip.clip_id, clip.start_frame))
            candidates.append(
                ReviewClip(
                    video=video,
                    clip=clip,
                    version=found.version.name,
                    taxonomy=found.version.taxonomy,
                    answer=clip.prediction,
                    smoothed=smoothed if found.prior is not None else None,
                    doubt=doubt(
                        clip.prediction,
                        operations,
                        smoothed=smoothed if found.prior is not None else None,
                        other=other[1] if other else None,
                        other_name=other[0] if other else "",
                    ),
                    segments=[
                        s
                        for s in segments
                        if s.start_frame < clip.end_frame and s.end_frame > clip.start_frame
                    ],
                )
            )
    candidates.sort(key=lambda c: (-c.doubt.score, c.video.key, c.clip.start_frame))
    queue.clips = candidates if limit is None else candidates[:limit]
    return queue


def _videos(session: Session, bucket: str, job: Job | None) -> list[Video]:
    """The bucket's (or the job's) videos with clips: the latest recording of each key."""
    query = select(Video).where(Video.bucket == bucket, Video.id.in_(select(Clip.video_id)))
    if job is not None:
        query = query.where(Video.id.in_(select(JobItem.video_id).where(JobItem.job_id == job.id)))
    latest: dict[str, Video] = {}
    for video in session.scalars(query.order_by(Video.created_at, Video.id)):
        latest[video.key] = video
    return sorted(latest.values(), key=lambda v: v.key)


def _serving(session: Session, video: Video) -> int | None:
    """The serving version, where it labelled the video (else None: the latest that did)."""
    return session.scalar(
        select(ModelVersion.id)
        .join(Prediction, Prediction.model_version_id == ModelVersion.id)
        .join(Clip, Clip.id == Prediction.clip_id)
        .where(
            Clip.video_id == video.id,
            ModelVersion.is_serving.is_(True),
            Prediction.status == PredictionStatus.OK,
        )
        .limit(1)
    )


def _other_answers(
    session: Session, video: Video, version_id: int
) -> dict[tuple[str, int], tuple[str, ClipPrediction]]:
    """Per clip (id, start frame), the newest answer of another version, with its name."""
    rows = session.execute(
        select(Prediction, Clip.clip_key, Clip.start_frame, ModelVersion.name)
        .join(Clip, Clip.id == Prediction.clip_id)
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(
            Clip.video_id == video.id,
            Prediction.model_version_id != version_id,
            Prediction.status == PredictionStatus.OK,
        )
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
    ).all()
    others: dict[tuple[str, int], tuple[str, ClipPrediction]] = {}
    for prediction, key, start, name in rows:
        answer = stored_answer(prediction)
        if answer is not None:
            others.setdefault((key, start), (name, answer))
    return others


def _checked(session: Session, video: Video) -> list[tuple[int, int]]:
    """The frames people have labelled in the video."""
    rows = session.execute(
        select(Label.start_frame, Label.end_frame).where(
            Label.bucket == video.bucket, Label.video_key == video.key, Label.source == HUMAN
        )
    ).all()
    return [(start, end) for start, end in rows]
