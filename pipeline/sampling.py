"""The CPU stage: download one item's video, split it into clips, motion-sample each clip's
frames, store them as frame packs, and record the clips with the labelling work they need, all
in the transaction that ends the unit."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.models.jobs import fail_item, set_item_state, settle_item
from packsight.models.labels import labelled_identity
from packsight.models.predictions import (
    ClipIdCollisionError,
    claim_clip_prefix,
    release_clip_prefix,
    upsert_clips,
    upsert_video,
)
from packsight.models.tables.clips import Prediction, PredictionStatus
from packsight.models.tables.jobs import FINAL_ITEM_STATES, ItemState, Job, JobItem
from packsight.models.tables.work import UnitKind
from packsight.models.work import UnitRef, add_units, finish_unit
from packsight.pipeline.context import Context
from packsight.pipeline.units import Lease
from packsight.storage.base import InvalidKeyError, ObjectInfo, ObjectNotFoundError
from packsight.video.decode import SampledClip, VideoDecodeError, VideoInfo
from packsight.video.framepack import pack_frames
from packsight.video.identity import VideoIdentity, clip_id, clip_prefix, identity_from_key
from packsight.video.onepass import sample_clips
from packsight.video.sampling import SAMPLERS, FrameSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    id: int
    job_id: str
    bucket: str
    key: str
    frames: FrameSettings
    model_version_id: int
    identity: VideoIdentity
    prefix: str  # of the video's clip ids


def frames_of_job(params: dict) -> FrameSettings:
    """A job's frame settings (jobs recorded before they were kept whole name three of them)."""
    if "frames" in params:
        return FrameSettings.from_json(params["frames"])
    return FrameSettings(
        params["frames_per_clip"],
        params["clip_seconds"],
        params["frame_max_side"],
        sampler=SAMPLERS[0],
    )


def sample_video(ctx: Context, unit: UnitRef, lease: Lease) -> None:
    item = ctx.transaction(lambda s: _start(s, unit.item_id))
    if item is None:  # ended meanwhile (e.g. failed by the sweeper): nothing left to do
        ctx.transaction(lambda s: finish_unit(s, unit.id, lease.token))
        return
    try:
        with tempfile.TemporaryDirectory(prefix="packsight-") as tmp:
            obj, info, records = _sample(ctx, item, Path(tmp))
    except (VideoDecodeError, ObjectNotFoundError, InvalidKeyError) as exc:
        # A fact about the video: name the user's object, not the worker's temporary copy.
        reason = exc.reason if isinstance(exc, VideoDecodeError) else None
        _fail(ctx, unit, lease, f"cannot decode {item.key!r}: {reason}" if reason else str(exc))
        return
    lease.check()
    try:
        ctx.transaction(lambda s: _record(ctx, s, unit, lease, item, obj, info, records))
    except ClipIdCollisionError as exc:
        if not _owner_gone(ctx, item, exc.owner):
            _fail(ctx, unit, lease, str(exc))
            return
        # The key that had these ids is gone (moved or deleted): this video takes them over.
        ctx.transaction(lambda s: _record(ctx, s, unit, lease, item, obj, info, records))


def _owner_gone(ctx: Context, item: _Item, owner: str) -> bool:
    try:
        ctx.storage.head(item.bucket, owner)
    except ObjectNotFoundError:
        ctx.transaction(
            lambda s: release_clip_prefix(s, bucket=item.bucket, prefix=item.prefix, key=owner)
        )
        return True
    return False


def _fail(ctx: Context, unit: UnitRef, lease: Lease, error: str) -> None:
    log.warning("item %s failed: %s", unit.item_id, error)
    item_id = unit.item_id
    assert item_id is not None, "a sampling unit names its item"

    def fail(session: Session) -> None:
        finish_unit(session, unit.id, lease.token)
        fail_item(session, item_id=item_id, error=error)

    ctx.transaction(fail)


def _start(session: Session, item_id: int | None) -> _Item | None:
    """Mark the item decoding and settle its identity: subject and session from the key's
    layout, else from its imported labels, and the prefix of its clip ids."""
    row = session.get(JobItem, item_id)
    if row is None or row.state in FINAL_ITEM_STATES:
        return None
    job = session.get_one(Job, row.job_id)
    identity = identity_from_key(row.key)
    if identity.subject is None or identity.session is None:
        imported = labelled_identity(session, bucket=job.bucket, video_key=row.key)
        identity = identity.merged(imported)
    prefix = clip_prefix(row.key, identity)
    set_item_state(session, item_id=row.id, state=ItemState.DECODING)
    frames = frames_of_job(job.params)
    return _Item(
        row.id, job.id, job.bucket, row.key, frames, job.model_version_id, identity, prefix
    )


def _sample(ctx: Context, item: _Item, tmp: Path) -> tuple[ObjectInfo, VideoInfo, list[dict]]:
    path = tmp / PurePosixPath(item.key).name
    obj = ctx.storage.download(item.bucket, item.key, path)
    frames = item.frames
    info, clips = sample_clips(
        path,
        frames_per_clip=frames.frames_per_clip,
        clip_seconds=frames.clip_seconds,
        max_side=frames.max_side,
        motion_size=frames.motion_size,
        threads=ctx.settings.decode_threads,
        sampler=frames.sampler,
        device=ctx.settings.decode_device,
    )
    # One clip's frames in memory at a time, however long the video.
    records = [
        _store_clip(ctx, item, obj.etag, clip)
        | {"clip_key": clip_id(item.prefix, clip.start_frame, info.fps)}
        for clip in clips
    ]
    return obj, info, records


def _store_clip(ctx: Context, item: _Item, etag: str, clip: SampledClip) -> dict:
    """Write a clip's sampled frames to the artifact store; returns its row values."""
    bucket = ctx.settings.artifact_bucket
    # The sampling is in the name: packs of other frame settings never overwrite each other.
    sampling = hashlib.sha256(item.frames.key.encode()).hexdigest()[:12]
    frames_key = f"frames/{item.bucket}/{item.key}/{etag}/{sampling}/{clip.start_frame:09d}.zip"
    meta = {
        "key": item.key,
        "start_frame": clip.start_frame,
        "frame_indices": list(clip.frame_indices),
    }
    ctx.artifacts.put_bytes(bucket, frames_key, pack_frames(clip.frames, meta=meta))
    return {
        "index": clip.index,
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "frame_indices": list(clip.frame_indices),
        "frames_uri": f"{bucket}/{frames_key}",
    }


def _record(
    ctx: Context,
    session: Session,
    unit: UnitRef,
    lease: Lease,
    item: _Item,
    obj: ObjectInfo,
    info: VideoInfo,
    records: list[dict],
) -> None:
    """The unit's outcome: the video (owning its clip ids in the bucket), its clips, the item
    moved on to inference and one label unit per batch of clips this model version has not
    labelled yet. ClipIdCollisionError (nothing recorded) if another key owns the ids."""
    finish_unit(session, unit.id, lease.token)
    claim_clip_prefix(session, bucket=item.bucket, prefix=item.prefix, key=item.key)
    video = upsert_video(
        session,
        {
            "bucket": item.bucket,
            "key": item.key,
            "etag": obj.etag,
            "size": obj.size,
            "fps": info.fps,
            "frame_count": info.frame_count,
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
            "subject": item.identity.subject,
            "session": item.identity.session,
            "clip_prefix": item.prefix,
        },
    )
    rows = upsert_clips(session, video_id=video.id, sampling=item.frames.key, clips=records)
    moved_on = set_item_state(
        session,
        item_id=item.id,
        state=ItemState.INFERRING,
        video_id=video.id,
        sampling=item.frames.key,
        clip_count=len(rows),
    )
    if not moved_on:
        return  # the item ended meanwhile
    # Clips this model version already labelled (an earlier job over the same video) are not
    # sent to the GPU again.
    done = set(
        session.scalars(
            select(Prediction.clip_id).where(
                Prediction.clip_id.in_([r.id for r in rows]),
                Prediction.model_version_id == item.model_version_id,
                Prediction.status == PredictionStatus.OK,
            )
        )
    )
    todo = [r.id for r in rows if r.id not in done]
    size = ctx.settings.gpu_batch_size * ctx.settings.gpu_task_batches
    batches = [todo[start : start + size] for start in range(0, len(todo), size)]
    add_units(
        session,
        UnitKind.LABEL,
        ({"job_id": item.job_id, "item_id": item.id, "payload": {"clip_ids": b}} for b in batches),
    )
    if not todo:
        settle_item(session, item_id=item.id)


def give_up_sampling(session: Session, unit: UnitRef, error: str) -> None:
    if unit.item_id is not None:
        fail_item(session, item_id=unit.item_id, error=f"{error} (while decoding the video)")
