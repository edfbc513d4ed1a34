"""The GPU stage's parts: the served model (one per process), a label unit's clips read from the
database, their frames loaded, their outcomes (a prediction, or the reason there is none)
recorded in the transaction that ends the unit. label_delivery.py runs them as one delivery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.jobs import settle_item
from packsight.models.predictions import ClipOutcome, upsert_predictions
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.versions import ModelVersion
from packsight.models.tables.work import UnitKind, WorkUnit
from packsight.models.work import UnitRef, adopt_units, finish_unit
from packsight.pipeline import metrics
from packsight.pipeline.context import Context
from packsight.pipeline.storage import open_artifact_storage
from packsight.pipeline.units import Lease
from packsight.settings import Settings
from packsight.storage.artifacts import resolve_artifact
from packsight.storage.base import StorageError
from packsight.video.framepack import FramePackError, read_frame_pack
from packsight.vlm.answer import ANSWER_FORMAT
from packsight.vlm.parsing import OutputParseError

if TYPE_CHECKING:
    from packsight.vlm.clip_input import ClipInput
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
    from packsight.vlm.speedups import Speedups

    trained_for = (version.settings or {}).get("answer", ANSWER_FORMAT)
    if trained_for != ANSWER_FORMAT:
        raise ValueError(
            f"model version {version.name!r} was trained to answer in format {trained_for!r}; "
            f"this packsight reads {ANSWER_FORMAT!r}: retrain it, or serve another version"
        )
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
        speedups=Speedups(
            cuda_graphs=settings.cuda_graphs,
            fused_kernels=settings.fused_kernels,
            compile_vision=settings.compile_vision,
            compile_language=settings.compile_language,
            host_vision=settings.host_vision,
            overlap_batches=settings.overlap_batches,
        ),
    )


def labeler_for(version: ModelVersion, settings: Settings) -> Labeler:
    global _cached
    with _cache_lock:
        if _cached is None or _cached[0] != version.name:
            _cached = None  # drop the old model before loading the new one
            _cached = (version.name, load_version(version, settings))
        return _cached[1]


@dataclass(frozen=True)
class UnitClips:
    """A label unit, read: its job item, the job's model version, the clips still to label."""

    unit: UnitRef
    item_id: int
    version: ModelVersion
    clips: list[Clip]


def record_unit(
    session: Session, *, batch: UnitClips, outcomes: list[ClipOutcome], token: str
) -> None:
    """End a label unit held under `token` with its clips' outcomes; its item and job are
    settled in the same transaction."""
    finish_unit(session, batch.unit.id, token)
    upsert_predictions(session, model_version_id=batch.version.id, outcomes=outcomes)
    metrics.clips_recorded(session, [outcome.error is None for outcome in outcomes])
    settle_item(session, item_id=batch.item_id)


def adopt_waiting(
    session: Session,
    ctx: Context,
    first: UnitClips,
    lease: Lease,
    *,
    clips: int,
    known: frozenset[int] = frozenset(),
) -> list[UnitRef]:
    """Waiting label units of the same model version, up to `clips` clips more, besides the
    delivery's own unit and the `known` ones (units adopted under this lease by a commit the
    delivery never saw, a retried transaction's, count against `clips` and come back)."""
    if clips <= 0:
        return []
    same_version = (
        select(WorkUnit)
        .join(JobItem, JobItem.id == WorkUnit.item_id)
        .join(Job, Job.id == JobItem.job_id)
        .where(
            WorkUnit.kind == UnitKind.LABEL,
            WorkUnit.id.not_in({first.unit.id} | known),
            Job.model_version_id == first.version.id,
        )
    )
    if ctx.embedded:
        # In-process, each job is driven by its own caller, who does not see units held by
        # another's delivery: take only this job's (no heartbeats run here either).
        same_version = same_version.where(WorkUnit.job_id == first.unit.job_id)
    return adopt_units(session, same_version, lease=lease.token, take=clips)


def read_unit(session: Session, unit: UnitRef) -> UnitClips | None:
    """The unit's clips that still lack a label of the job's version (a duplicate delivery, or
    another job over the same video, may have labelled some); None if its item is gone."""
    item = session.get(JobItem, unit.item_id)
    if item is None:
        return None
    version = session.get_one(ModelVersion, session.get_one(Job, item.job_id).model_version_id)
    labelled = select(Prediction.clip_id).where(
        Prediction.model_version_id == version.id, Prediction.status == PredictionStatus.OK
    )
    clips = session.scalars(
        select(Clip)
        .where(Clip.id.in_(unit.payload["clip_ids"]), Clip.id.not_in(labelled))
        .order_by(Clip.id)
    ).all()
    session.expunge_all()  # plain snapshots from here on
    return UnitClips(unit, item.id, version, list(clips))


def clip_loader(ctx: Context, clip: Clip) -> Callable[[], ClipInput | Exception]:
    """Fetch and unpack the clip's frame pack, or return why it cannot be read. An unreachable
    artifact store is waited out (ctx.artifacts) and, beyond that, raises: it is never a
    clip's fault."""
    from packsight.vlm.clip_input import ClipInput

    def load() -> ClipInput | Exception:
        try:
            pack = read_frame_pack(ctx.artifacts.get_bytes(*clip.frames_uri.split("/", 1)))
        except (FramePackError, StorageError) as exc:
            return exc
        # Still JPEG: the labeler decodes a whole batch on the GPU.
        return ClipInput(pack, clip.frame_count, tuple(clip.frame_indices))

    return load


def predict_clips(ctx: Context, clips: list[Clip], labeler: Labeler) -> list[ClipOutcome]:
    """Run the model over the clips, as a delivery does, with no database: a clip whose frames
    cannot be read gets an error outcome. Frames are fetched and unpacked while the GPU works
    on the previous batch."""
    results = labeler.predict_stream(
        [clip_loader(ctx, clip) for clip in clips], on_batch=metrics.gpu_batch_done
    )
    return [outcome_of(clip.id, result) for clip, result in zip(clips, results, strict=True)]


def outcome_of(clip_id: int, result: ClipPrediction | Exception) -> ClipOutcome:
    if isinstance(result, ClipPrediction):
        return ClipOutcome(
            clip_id=clip_id,
            dominant_operation=result.dominant_operation,
            start_frame=result.start_frame,
            end_frame=result.end_frame,
            anticipated_next_operation=result.anticipated_next_operation,
            confidence=result.confidence,
            raw_output=result.raw_output,
            operation_probabilities=result.operation_probabilities,
            next_probabilities=result.next_probabilities,
        )
    if isinstance(result, FramePackError | StorageError | ValueError) and not isinstance(
        result, OutputParseError
    ):
        return ClipOutcome(clip_id=clip_id, error=f"sampled frames unreadable: {result}")
    raw = getattr(result, "raw_output", None)
    return ClipOutcome(clip_id=clip_id, error=f"invalid model output: {result}", raw_output=raw)


def give_up_labelling(session: Session, unit: UnitRef, error: str) -> None:
    """Record the error as the outcome of the unit's clips (never over a label)."""
    item = session.get(JobItem, unit.item_id)
    if item is None:
        return
    version_id = session.get_one(Job, item.job_id).model_version_id
    outcomes = [
        ClipOutcome(clip_id=cid, error=f"labelling failed: {error}")
        for cid in unit.payload["clip_ids"]
    ]
    upsert_predictions(session, model_version_id=version_id, outcomes=outcomes)
    metrics.clips_recorded(session, [False] * len(outcomes))
    settle_item(session, item_id=item.id)
