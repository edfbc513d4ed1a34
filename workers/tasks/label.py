"""GPU stage: label a batch of sampled clips with the job's model version and record every
clip's outcome (a prediction or the reason there is none)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from packsight.framepack import FramePackError, read_frame_pack
from packsight.models.db import session_scope
from packsight.models.jobs import register_attempt, settle_items, settle_job
from packsight.models.predictions import ClipOutcome, upsert_predictions
from packsight.models.tables import Clip, Job, JobItem, ModelVersion
from packsight.parsing import ClipPrediction, OutputParseError
from packsight.settings import Settings, get_settings
from packsight.storage import StorageError, open_artifact_storage, resolve_artifact
from packsight.taxonomy import load_taxonomy
from packsight.workers.app import INFER_TASK, app, retry_or_give_up

if TYPE_CHECKING:
    from packsight.vlm.labeler import Labeler

log = logging.getLogger(__name__)

# One model per process: GPU workers run `--pool solo`, so the model is loaded in the process
# that uses it (after any fork) and kept across tasks. A job of another version (after a
# promotion or rollback) replaces it: no restart needed.
_cache_lock = threading.Lock()
_cached: tuple[str, Labeler] | None = None


def load_version(
    version: ModelVersion, settings: Settings, *, adapter: str | None = None
) -> Labeler:
    """Load a model version's labeler; `adapter` overrides where its adapter is read from (a
    local copy). artifact:// adapters are fetched once into DATA_DIR/adapters."""
    # Imported here so CPU workers and the API never load torch.
    from packsight.vlm.labeler import load_labeler

    adapter = adapter or version.adapter_uri
    if adapter is not None:
        adapter = resolve_artifact(
            adapter, open_artifact_storage(settings), settings.data_dir / "adapters"
        )
    return load_labeler(
        model=version.base_model,
        adapter=adapter,
        quantization=version.quantization,  # type: ignore[arg-type]
        device=settings.device,
        taxonomy=load_taxonomy(version.taxonomy),
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.gpu_batch_size,
    )


def labeler_for(version: ModelVersion, settings: Settings) -> Labeler:
    global _cached
    with _cache_lock:
        if _cached is None or _cached[0] != version.name:
            _cached = None  # drop the old model before loading the new one
            _cached = (version.name, load_version(version, settings))
        return _cached[1]


@app.task(name=INFER_TASK, bind=True)
def label_clips_task(self, item_id: int, clip_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    try:
        run_labelling(item_id=item_id, clip_ids=clip_ids, task_id=self.request.id or "local")
    except Exception as exc:
        log.exception("labelling clips %s of item %s failed", clip_ids, item_id)

        def give_up(error: str) -> None:
            fail_clips(get_settings(), item_id=item_id, clip_ids=clip_ids, error=error)

        retry_or_give_up(self, exc, give_up)


def _outcome(clip_id: int, result: ClipPrediction | Exception) -> ClipOutcome:
    if isinstance(result, ClipPrediction):
        return ClipOutcome(
            clip_id=clip_id,
            dominant_operation=result.dominant_operation,
            start_frame=result.start_frame,
            end_frame=result.end_frame,
            anticipated_next_operation=result.anticipated_next_operation,
            confidence=result.confidence,
            raw_output=result.raw_output,
        )
    if isinstance(result, FramePackError | StorageError | ValueError) and not isinstance(
        result, OutputParseError
    ):
        return ClipOutcome(clip_id=clip_id, error=f"sampled frames unreadable: {result}")
    raw = getattr(result, "raw_output", None)
    return ClipOutcome(clip_id=clip_id, error=f"invalid model output: {result}", raw_output=raw)


def label_clips(clips: list[Clip], labeler: Labeler, settings: Settings) -> list[ClipOutcome]:
    """Run the model over the clips; a clip whose frames cannot be read gets an error outcome.
    Frames are fetched and unpacked while the GPU works on the previous batch."""
    from packsight.vlm.labeler import ClipInput

    artifacts = open_artifact_storage(settings)

    def loader(clip: Clip) -> Callable[[], ClipInput | Exception]:
        def load() -> ClipInput | Exception:
            try:
                pack = read_frame_pack(artifacts.get_bytes(*clip.frames_uri.split("/", 1)))
            except (FramePackError, StorageError) as exc:
                return exc
            # Still JPEG: the labeler decodes a whole batch on the GPU.
            return ClipInput(pack, clip.frame_count, tuple(clip.frame_indices))

        return load

    results = labeler.predict_stream([loader(clip) for clip in clips])
    return [_outcome(clip.id, result) for clip, result in zip(clips, results, strict=True)]


def run_labelling(
    *, item_id: int, clip_ids: list[int], task_id: str, settings: Settings | None = None
) -> None:
    settings = settings or get_settings()
    db = settings.resolved_database_url
    with session_scope(db) as session:
        item = session.get(JobItem, item_id)
        job = session.get(Job, item.job_id)
        version = session.get(ModelVersion, job.model_version_id)
        clips = list(session.scalars(select(Clip).where(Clip.id.in_(clip_ids)).order_by(Clip.id)))
        attempts = register_attempt(session, task_id=f"label:{task_id}")
        job_id = job.id

    if attempts > settings.max_attempts:
        error = f"gave up after {settings.max_attempts} attempts: the GPU worker died on this batch"
        outcomes = [ClipOutcome(clip_id=clip.id, error=error) for clip in clips]
    else:
        outcomes = label_clips(clips, labeler_for(version, settings), settings)
    record_outcomes(
        settings, item_id=item_id, job_id=job_id, version_id=version.id, outcomes=outcomes
    )


def record_outcomes(
    settings: Settings, *, item_id: int, job_id: str, version_id: int, outcomes: list[ClipOutcome]
) -> None:
    db = settings.resolved_database_url
    with session_scope(db) as session:
        upsert_predictions(session, model_version_id=version_id, outcomes=outcomes)
    # Separate transactions: whoever commits the last outcome also sees every other one.
    with session_scope(db) as session:
        settle_items(session, item_ids=[item_id])
    with session_scope(db) as session:
        settle_job(session, job_id=job_id)


def fail_clips(settings: Settings, *, item_id: int, clip_ids: list[int], error: str) -> None:
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, session.get(JobItem, item_id).job_id)
        job_id, version_id = job.id, job.model_version_id
    outcomes = [ClipOutcome(clip_id=cid, error=f"labelling failed: {error}") for cid in clip_ids]
    record_outcomes(
        settings, item_id=item_id, job_id=job_id, version_id=version_id, outcomes=outcomes
    )
