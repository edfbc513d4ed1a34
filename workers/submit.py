"""Turn a bucket + prefix (or a list of keys) into a job with one item per video, and queue
the items. Shared by the API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.models.db import session_scope
from packsight.models.jobs import create_job, get_or_create_model_version
from packsight.models.promotions import serving_version
from packsight.models.tables import JobItem, ModelVersion
from packsight.settings import Settings
from packsight.storage import BucketNotFoundError, open_storage, validate_key
from packsight.taxonomy import load_taxonomy
from packsight.video import VIDEO_EXTENSIONS, is_video_key


class NothingToLabelError(ValueError):
    """The prefix holds no video files."""


@dataclass(frozen=True)
class Submission:
    job_id: str
    item_ids: list[int]


def create_labelling_job(
    settings: Settings,
    *,
    bucket: str,
    prefix: str | None = None,
    keys: Sequence[str] | None = None,
) -> Submission:
    """Validate the source, then record the job and its items (nothing is queued yet)."""
    if (prefix is None) == (keys is None):
        raise ValueError("give either a prefix or a list of keys")
    load_taxonomy(settings.taxonomy)  # fail early on a misconfigured taxonomy
    storage = open_storage(settings)
    if not storage.bucket_exists(bucket):
        raise BucketNotFoundError(f"bucket {bucket!r} does not exist")
    if keys is None:
        keys = [o.key for o in storage.list_objects(bucket, prefix or "") if is_video_key(o.key)]
        if not keys:
            where = f"{bucket}/{prefix}" if prefix else bucket
            raise NothingToLabelError(
                f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {where!r}"
            )
    else:
        keys = [validate_key(key) for key in keys]
        if not keys:
            raise NothingToLabelError("the list of keys is empty")

    params = {
        "frames_per_clip": settings.frames_per_clip,
        "clip_seconds": settings.clip_seconds,
        "frame_max_side": settings.frame_max_side,
        "taxonomy": settings.taxonomy,
    }
    with session_scope(settings.resolved_database_url) as session:
        version = job_model_version(session, settings)
        job = create_job(
            session,
            bucket=bucket,
            prefix=prefix,
            keys=keys,
            model_version_id=version.id,
            params=params,
        )
        item_ids = list(
            session.scalars(select(JobItem.id).where(JobItem.job_id == job.id).order_by(JobItem.id))
        )
        return Submission(job_id=job.id, item_ids=item_ids)


def job_model_version(session: Session, settings: Settings) -> ModelVersion:
    """The version new jobs label with: PACKSIGHT_ADAPTER when set explicitly, else the adapter
    promoted for the configured model (training and rollbacks switch it), else the base model."""
    if settings.adapter is None:
        serving = serving_version(
            session,
            base_model=settings.model,
            quantization=settings.quantization,
            taxonomy=settings.taxonomy,
        )
        if serving is not None:
            return serving
    return get_or_create_model_version(
        session,
        base_model=settings.model,
        adapter=settings.adapter,
        quantization=settings.quantization,
        taxonomy=settings.taxonomy,
    )


def enqueue_items(item_ids: Sequence[int]) -> None:
    """Queue one CPU task per item (runs them in-process on the embedded default)."""
    from packsight.workers.tasks.sample import sample_video_task

    for item_id in item_ids:
        sample_video_task.apply_async(args=[item_id])
