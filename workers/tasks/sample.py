"""CPU stage: download one video, split it into clips, motion-sample frames, store them, and
hand the clips to the GPU queue."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath

from sqlalchemy import select

from packsight.framepack import pack_frames
from packsight.models.db import session_scope
from packsight.models.jobs import register_attempt, set_item_state, settle_items, settle_job
from packsight.models.predictions import upsert_clips, upsert_video
from packsight.models.tables import ItemState, Job, JobItem, Prediction, PredictionStatus
from packsight.settings import Settings, get_settings
from packsight.storage import Storage, StorageError, open_artifact_storage, open_storage
from packsight.video import SampledClip, VideoDecodeError, clip_id, decode_clips, plan_clips
from packsight.workers.app import DECODE_TASK, app, retry_or_give_up

log = logging.getLogger(__name__)


@app.task(name=DECODE_TASK, bind=True)
def sample_video_task(self, item_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        batches = run_sampling(item_id=item_id, task_id=self.request.id or f"local-{item_id}")
    except Exception as exc:
        log.exception("sampling item %s failed", item_id)
        retry_or_give_up(
            self, exc, lambda error: fail_item(get_settings(), item_id=item_id, error=error)
        )
        return
    from packsight.workers.tasks.label import label_clips_task

    for clip_ids in batches:
        label_clips_task.apply_async(args=[item_id, clip_ids])


def fail_item(settings: Settings, *, item_id: int, error: str) -> None:
    db = settings.resolved_database_url
    with session_scope(db) as session:
        set_item_state(session, item_id=item_id, state=ItemState.FAILED, error=error)
        job_id = session.get(JobItem, item_id).job_id
    # A separate transaction, so the last item to end always sees every other item's end.
    with session_scope(db) as session:
        settle_job(session, job_id=job_id)


def store_clip(
    settings: Settings, artifacts: Storage, *, bucket: str, key: str, etag: str, clip: SampledClip
) -> dict:
    """Write a clip's sampled frames to the artifact store; returns its row values."""
    frames_key = f"frames/{bucket}/{key}/{etag}/{clip.start_frame:09d}.zip"
    meta = {"key": key, "start_frame": clip.start_frame, "frame_indices": list(clip.frame_indices)}
    artifacts.put_bytes(settings.artifact_bucket, frames_key, pack_frames(clip.frames, meta=meta))
    return {
        "index": clip.index,
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "frame_indices": list(clip.frame_indices),
        "frames_uri": f"{settings.artifact_bucket}/{frames_key}",
    }


def run_sampling(
    *, item_id: int, task_id: str, settings: Settings | None = None
) -> list[list[int]]:
    """Sample one item's video; returns the batches of clip ids still to be labelled."""
    settings = settings or get_settings()
    db = settings.resolved_database_url
    with session_scope(db) as session:
        item = session.get(JobItem, item_id)
        if item is None or item.state in ItemState.FINAL:
            return []
        job = session.get(Job, item.job_id)
        attempts = register_attempt(session, task_id=f"sample:{task_id}")
        if attempts <= settings.max_attempts:
            set_item_state(session, item_id=item_id, state=ItemState.DECODING, attempts=attempts)
        bucket, key, params = job.bucket, item.key, dict(job.params)
        model_version_id = job.model_version_id
    if attempts > settings.max_attempts:
        error = f"gave up after {settings.max_attempts} attempts: the worker died while decoding"
        fail_item(settings, item_id=item_id, error=error)
        return []

    storage = open_storage(settings)
    artifacts = open_artifact_storage(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="packsight-") as tmp:
            path = Path(tmp) / PurePosixPath(key).name
            obj = storage.download(bucket, key, path)
            info, plans = plan_clips(
                path,
                frames_per_clip=params["frames_per_clip"],
                clip_seconds=params["clip_seconds"],
                motion_size=(settings.motion_width, settings.motion_height),
            )
            # One clip's frames in memory at a time, however long the video.
            records = [
                store_clip(settings, artifacts, bucket=bucket, key=key, etag=obj.etag, clip=clip)
                | {"clip_key": clip_id(key, clip.start_frame, info.fps)}
                for clip in decode_clips(path, info, plans, max_side=params["frame_max_side"])
            ]
    except (VideoDecodeError, StorageError) as exc:
        # Name the user's object, not the worker's temporary copy.
        error = (
            f"cannot decode {key!r}: {exc.reason}"
            if isinstance(exc, VideoDecodeError)
            else str(exc)
        )
        log.warning("item %s failed: %s", item_id, error)
        fail_item(settings, item_id=item_id, error=error)
        return []

    with session_scope(db) as session:
        video = upsert_video(
            session,
            bucket=bucket,
            key=key,
            etag=obj.etag,
            size=obj.size,
            fps=info.fps,
            frame_count=info.frame_count,
            width=info.width,
            height=info.height,
            duration_s=info.duration_s,
        )
        rows = upsert_clips(session, video_id=video.id, clips=records)
        set_item_state(
            session,
            item_id=item_id,
            state=ItemState.INFERRING,
            video_id=video.id,
            clip_count=len(rows),
        )
        # Clips this model version already labelled (an earlier job over the same video) are
        # not sent to the GPU again.
        done = set(
            session.scalars(
                select(Prediction.clip_id).where(
                    Prediction.clip_id.in_([r.id for r in rows]),
                    Prediction.model_version_id == model_version_id,
                    Prediction.status == PredictionStatus.OK,
                )
            )
        )
        todo = [r.id for r in rows if r.id not in done]
        job_id = job.id

    if not todo:
        with session_scope(db) as session:
            settle_items(session, item_ids=[item_id])
        with session_scope(db) as session:
            settle_job(session, job_id=job_id)
    size = settings.gpu_batch_size * settings.gpu_task_batches
    return [todo[start : start + size] for start in range(0, len(todo), size)]
