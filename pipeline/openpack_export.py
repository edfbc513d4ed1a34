"""A job's timelines as OpenPack operation annotations: for every video of the job, its timeline
under the job's model version (smoothed with the version's transition prior when it has one,
as the serving answer; or the clips' raw answers) written by packsight.labels.openpack_export,
so that `packsight labels import` of the folder gives back the same intervals. One
transaction per video: a large job never sits in memory at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.labels.openpack_export import ExportedVideo, ExportError, OpenPackWriter
from packsight.labels.timeline import TimelineSegment
from packsight.models.labels import labelled_identity
from packsight.models.tables.clips import Video
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.context import Context
from packsight.pipeline.timelines import NoTimelineError, video_timeline
from packsight.video.identity import VideoIdentity, identity_from_key


@dataclass(frozen=True)
class _Found:
    key: str
    identity: VideoIdentity
    fps: float
    frame_count: int
    segments: list[TimelineSegment]
    origin: str  # bucket/key
    smoothed: bool  # with the version's prior


@dataclass
class OpenPackExport:
    job_id: str
    bucket: str
    model_version: str
    taxonomy: str
    raw: bool
    root: Path
    sessions: Path | None = None  # the sessions table, once written
    videos: list[tuple[str, ExportedVideo, bool]] = field(default_factory=list)  # key, smoothed
    skipped: list[str] = field(default_factory=list)  # each names its video and why


def export_openpack(
    ctx: Context, *, job_id: str, out: Path, raw: bool = False, video_key: str | None = None
) -> OpenPackExport:
    """Write the job's videos (or only `video_key`) into `out`, an empty folder (see
    `prepare_folder`), and the sessions table last (none when no video was written); a video
    without an answer is skipped, with why."""

    def plan(session: Session) -> tuple[OpenPackExport, list[tuple[str, int | None, str]]]:
        job = session.get_one(Job, job_id)
        version = session.get_one(ModelVersion, job.model_version_id)
        query = select(JobItem.key, JobItem.video_id, JobItem.state).where(JobItem.job_id == job.id)
        if video_key is not None:
            query = query.where(JobItem.key == video_key)
        items = [(k, v, s) for k, v, s in session.execute(query.order_by(JobItem.id))]
        outcome = OpenPackExport(job.id, job.bucket, version.name, version.taxonomy, raw, out)
        return outcome, items

    outcome, items = ctx.transaction(plan)
    writer = OpenPackWriter(out, outcome.taxonomy)
    for key, video_id, state in items:
        if video_id is None:
            outcome.skipped.append(f"{key}: not sampled yet ({state})")
            continue

        def read(session: Session, vid: int = video_id) -> _Found | str:
            return _read(session, vid, job_id=job_id, raw=raw)

        found = ctx.transaction(read)
        if isinstance(found, str):
            outcome.skipped.append(found)
            continue
        try:
            exported = writer.add(
                key=found.key,
                identity=found.identity,
                fps=found.fps,
                frame_count=found.frame_count,
                spans=found.segments,
                origin=found.origin,
            )
        except ExportError as exc:
            outcome.skipped.append(str(exc))
            continue
        outcome.videos.append((found.key, exported, found.smoothed))
    if outcome.videos:  # else the folder stays empty
        outcome.sessions = writer.finish()
    return outcome


def _read(session: Session, video_id: int, *, job_id: str, raw: bool) -> _Found | str:
    """The video's timeline under the job's version, or why there is none."""
    job = session.get_one(Job, job_id)
    video = session.get_one(Video, video_id)
    try:
        found = video_timeline(session, video, model_version_id=job.model_version_id)
    except NoTimelineError as exc:
        return str(exc)
    identity = (
        identity_from_key(video.key)
        .merged(VideoIdentity(video.subject, video.session))
        .merged(labelled_identity(session, bucket=video.bucket, video_key=video.key))
    )
    return _Found(
        key=video.key,
        identity=identity,
        fps=video.fps,
        frame_count=video.frame_count,
        segments=found.raw_segments if raw else found.segments,
        origin=f"{video.bucket}/{video.key}",
        smoothed=found.prior is not None and not raw,
    )
