"""Submitting a labelling job: validate the source, then record the job, its first items and
their work in one transaction, and publish after the commit. A large source (a long key list, a
prefix with more than one page of objects) is listed into items in the background, a chunk per
transaction, so the request returns in the same time whatever the job's size."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from packsight.labels.taxonomy import load_taxonomy
from packsight.models.jobs import add_items, get_or_create_model_version, model_version_name
from packsight.models.promotions import serving_version
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.versions import ModelVersion
from packsight.models.tables.work import UnitKind
from packsight.models.work import add_units
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import top_up
from packsight.pipeline.storage import open_storage
from packsight.settings import Settings
from packsight.storage.base import BucketNotFoundError, InvalidKeyError
from packsight.storage.keys import validate_key
from packsight.video.decode import VIDEO_EXTENSIONS, is_video_key
from packsight.video.sampling import FrameSettings

# Items recorded per transaction, in the request and then by the listing unit. One page of an
# S3 listing is 1,000 objects, so the request itself reads at most one page.
CHUNK = 1000


class NothingToLabelError(ValueError):
    """The source holds no video files."""


class IdempotencyConflictError(ValueError):
    """The idempotency key was used before for a different request."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request (job {job_id}); "
            "use a new key for a new job"
        )
        self.job_id = job_id


@dataclass(frozen=True)
class JobRequest:
    bucket: str
    prefix: str | None = None
    keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.prefix is None) == (self.keys is None):
            raise ValueError("give either a prefix or a list of keys")

    def digest(self) -> str:
        """What tells a retry of this request from another request under the same key."""
        body = {"bucket": self.bucket, "prefix": self.prefix, "keys": self.keys}
        return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    job_id: str
    items: int  # items (videos) recorded so far; the rest follow while listed is False
    listed: bool  # False while the rest of the source is listed in the background
    created: bool  # False: an earlier request with this idempotency key made the job


@dataclass(frozen=True)
class _Source:
    first: list[str]  # keys recorded with the job
    rest: dict[str, object] | None  # the list unit's payload when more is to come
    cursor: str | None


def submit_job(
    ctx: Context,
    request: JobRequest,
    *,
    idempotency_key: str | None = None,
    check_runner: Callable[[], None] | None = None,
) -> Submission:
    """Record a labelling job and publish its first work. Raises BucketNotFoundError,
    NothingToLabelError, InvalidKeyError, IdempotencyConflictError, and the publisher's
    BrokerUnavailableError (then nothing was recorded). `check_runner`, once the source is
    known to hold videos, raises if whoever will run the work cannot (the embedded default's
    own model, say): then nothing is recorded either."""
    settings = ctx.settings
    if idempotency_key is not None:
        earlier = ctx.transaction(lambda s: _earlier(s, idempotency_key, request.digest()))
        if earlier is not None:
            return earlier
    load_taxonomy(settings.taxonomy)  # fail early on a misconfigured taxonomy
    if request.bucket == settings.artifact_bucket:
        raise InvalidKeyError(
            f"bucket {request.bucket!r} is packsight's internal artifact bucket "
            "(PACKSIGHT_ARTIFACT_BUCKET), not a video source"
        )
    source = _first_chunk(settings, request)
    if check_runner is not None:
        check_runner()
    if ctx.publisher is not None:
        ctx.publisher.check()  # broker down: refuse now rather than record work nobody runs

    def record(session: Session) -> Submission:
        version = job_model_version(session, settings)
        job = Job(
            bucket=request.bucket,
            prefix=request.prefix,
            model_version_id=version.id,
            params=job_params(settings, version),
            idempotency_key=idempotency_key,
            request_digest=request.digest() if idempotency_key else None,
            listed=source.rest is None,
        )
        session.add(job)
        session.flush()
        add_items(session, job_id=job.id, keys=source.first)
        if source.rest is not None:
            row = {"job_id": job.id, "payload": source.rest, "cursor": source.cursor}
            add_units(session, UnitKind.LIST, [row])
        items = len(dict.fromkeys(source.first))
        return Submission(job.id, items, listed=source.rest is None, created=True)

    try:
        submission = ctx.transaction(record)
    except IntegrityError:
        # Another request with the same idempotency key committed first.
        if idempotency_key is None:
            raise
        earlier = ctx.transaction(lambda s: _earlier(s, idempotency_key, request.digest()))
        if earlier is None:
            raise
        return earlier
    top_up(ctx)
    return submission


def _earlier(session: Session, key: str, digest: str) -> Submission | None:
    job = session.scalar(select(Job).where(Job.idempotency_key == key))
    if job is None:
        return None
    if job.request_digest != digest:
        raise IdempotencyConflictError(key, job.id)
    items = session.scalar(select(func.count()).where(JobItem.job_id == job.id)) or 0
    return Submission(job.id, items, listed=job.listed, created=False)


def _first_chunk(settings: Settings, request: JobRequest) -> _Source:
    """The keys to record with the job, and what the listing unit must do with the rest."""
    storage = open_storage(settings)  # no retries: a request fails fast and says why
    if not storage.bucket_exists(request.bucket):
        raise BucketNotFoundError(f"bucket {request.bucket!r} does not exist")
    if request.keys is not None:
        keys = [validate_key(key) for key in request.keys]
        if not keys:
            raise NothingToLabelError("the list of keys is empty")
        rest: dict[str, object] | None = {"keys": keys[CHUNK:]} if len(keys) > CHUNK else None
        return _Source(keys[:CHUNK], rest, cursor="0" if rest else None)
    prefix = request.prefix or ""
    scanned = list(islice(storage.list_objects(request.bucket, prefix), CHUNK + 1))
    first = [info.key for info in scanned[:CHUNK] if is_video_key(info.key)]
    if len(scanned) <= CHUNK:
        if not first:
            where = f"{request.bucket}/{prefix}" if prefix else request.bucket
            raise NothingToLabelError(
                f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {where!r}"
            )
        return _Source(first, None, None)
    return _Source(first, {"prefix": prefix}, cursor=scanned[CHUNK - 1].key)


class FrameSettingsMismatchError(ValueError):
    """Frame settings asked for explicitly differ from those the model was trained with."""


FRAME_VARIABLES = {
    "frames_per_clip": "PACKSIGHT_FRAMES_PER_CLIP",
    "clip_seconds": "PACKSIGHT_CLIP_SECONDS",
    "frame_max_side": "PACKSIGHT_FRAME_MAX_SIDE",
    "motion_width": "PACKSIGHT_MOTION_WIDTH",
    "motion_height": "PACKSIGHT_MOTION_HEIGHT",
    "sampler": "PACKSIGHT_SAMPLER",
}


def job_frames(settings: Settings, version: ModelVersion) -> FrameSettings:
    """The frame settings a job labels with: those the version's adapter was trained with (a
    model labels well only frames like those it learned from), else the configured ones. Asking
    explicitly for others is refused unless PACKSIGHT_FORCE_FRAME_SETTINGS is set."""
    configured = settings.frame_settings
    trained = (version.settings or {}).get("frames")
    if trained is None:
        return configured
    trained_frames = FrameSettings.from_json(trained)
    # Only what was set explicitly counts: a variable set to the value the adapter was trained
    # with asks for nothing else, whatever the defaults of the others are.
    explicit = sorted(
        FRAME_VARIABLES[name]
        for name in FRAME_VARIABLES.keys() & settings.model_fields_set
        if _frame_value(configured, name) != _frame_value(trained_frames, name)
    )
    if not explicit:
        return trained_frames
    if settings.force_frame_settings:
        return configured
    raise FrameSettingsMismatchError(
        f"model version {version.name!r} was trained on frames {trained_frames.key}, but "
        f"{', '.join(explicit)} {'asks' if len(explicit) == 1 else 'ask'} for "
        f"{configured.key}: unset to label with the trained settings, or set "
        "PACKSIGHT_FORCE_FRAME_SETTINGS=true to label with these anyway"
    )


def _frame_value(frames: FrameSettings, variable: str) -> object:
    """The value of one FRAME_VARIABLES setting in `frames`."""
    if variable in ("motion_width", "motion_height"):
        return frames.motion_size[variable == "motion_height"]
    return getattr(frames, "max_side" if variable == "frame_max_side" else variable)


def job_params(settings: Settings, version: ModelVersion) -> dict[str, object]:
    """What a job runs with, kept so its results can be reproduced."""
    return {"frames": job_frames(settings, version).to_json(), "taxonomy": version.taxonomy}


def job_model_version(session: Session, settings: Settings) -> ModelVersion:
    """The version new jobs label with: PACKSIGHT_ADAPTER when set explicitly, else the adapter
    promoted for the configured model (training and rollbacks switch it), else the base model."""
    return configured_version(session, settings) or get_or_create_model_version(
        session, **_configured(settings)
    )


def configured_version(session: Session, settings: Settings) -> ModelVersion | None:
    """job_model_version's choice without making its row: None while no job has used it."""
    if settings.adapter is None:
        serving = serving_version(
            session,
            base_model=settings.model,
            quantization=settings.quantization,
            taxonomy=settings.taxonomy,
        )
        if serving is not None:
            return serving
    name = model_version_name(**_configured(settings))
    return session.scalar(select(ModelVersion).where(ModelVersion.name == name))


def _configured(settings: Settings) -> dict[str, Any]:
    return {
        "base_model": settings.model,
        "adapter": settings.adapter,
        "quantization": settings.quantization,
        "taxonomy": settings.taxonomy,
    }
