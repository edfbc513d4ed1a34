"""The training stage's heavy steps: the dataset a run trains and is scored on, fitting the
adapter (with checkpoints kept in object storage), and freeing the model's memory between them.
The stage itself (packsight.pipeline.training) strings them together with the run's bookkeeping.
"""

from __future__ import annotations

import gc
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from packsight.labels.taxonomy import Taxonomy
from packsight.models.training_runs import labelled_videos
from packsight.pipeline import metrics
from packsight.pipeline.context import Context
from packsight.settings import Settings
from packsight.storage.base import StorageError
from packsight.training.artifacts import RunArtifacts
from packsight.training.retraining import (
    Dataset,
    LabelledVideo,
    RunParams,
    VideoUnavailableError,
    build_dataset,
)

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Records a run's progress (step=, total_steps=, dataset=, progress={"phase": ...}, ...)
    and that it is alive."""

    def __call__(self, **fields: Any) -> None: ...


class TrainingRefusedError(ValueError):
    """The run cannot succeed (no data); retrying will not help."""


@dataclass(frozen=True)
class RunSpec:
    """What the task needs of the run row, read once when it is claimed."""

    id: str
    claim: str  # this delivery's token; progress and the outcome are accepted only with it
    params: RunParams
    base_model: str
    quantization: str
    taxonomy: Taxonomy


def gather_dataset(
    ctx: Context, run: RunSpec, work: Path, artifacts: RunArtifacts, progress: Progress
) -> Dataset:
    params = run.params
    # The labelled videos are frozen with the run's first delivery: a resumed run must see the
    # data its checkpoint was trained on, not labels corrected since.
    videos = artifacts.get_videos()
    if videos is None:
        videos = ctx.transaction(
            lambda s: labelled_videos(s, taxonomy=run.taxonomy.name, bucket=params.bucket)
        )
        artifacts.put_videos(videos)
    source, folder = ctx.storage, work / "videos"

    def fetch(video: LabelledVideo) -> Path:
        # One video on disk at a time: its examples are decoded before the next is fetched, and
        # an archive does not fit a worker's disk.
        shutil.rmtree(folder, ignore_errors=True)
        path = folder / video.bucket / video.key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            source.download(video.bucket, video.key, path)
        except StorageError as exc:  # labels can outlive their video
            raise VideoUnavailableError(str(exc)) from exc
        return path

    read = 0

    def on_video(_: LabelledVideo) -> None:
        nonlocal read
        read += 1
        progress(progress={"phase": "gathering", "videos_done": read, "videos": len(videos)})

    dataset = build_dataset(
        videos,
        fetch,
        taxonomy=run.taxonomy,
        splits=params.splits,
        frames=params.frames,
        on_video=on_video,
    )
    shutil.rmtree(folder, ignore_errors=True)
    where = f"bucket {params.bucket!r}" if params.bucket else "any bucket"
    for name, examples, subjects in (
        ("training", dataset.train, params.splits.train),
        ("test", dataset.test, params.splits.test),
    ):
        if not examples:
            raise TrainingRefusedError(
                f"no {name} clips: no verified {run.taxonomy.name} labels in {where} for a video "
                f"of subjects {', '.join(subjects)} ({len(videos)} labelled videos, "
                f"{len(dataset.skipped)} unreadable)"
            )
    return dataset


def fit_adapter(
    settings: Settings,
    run: RunSpec,
    dataset: Dataset,
    work: Path,
    artifacts: RunArtifacts,
    progress: Progress,
) -> tuple[Path, int]:
    from packsight.training.config import TrainingConfig
    from packsight.training.qlora import train_adapter

    stored = run.params.config
    config = TrainingConfig(**{**stored, "train_modules": tuple(stored["train_modules"])})
    total = config.total_steps(len(dataset.train))
    progress(total_steps=total, progress={"phase": "training"})
    metrics.training_progress(settings.queue_train, step=0, total=total)
    resumed = artifacts.restore_checkpoint(work / "checkpoint")
    if resumed is not None:
        log.info("training run %s: continuing from stored checkpoint %d", run.id, resumed)

    def on_step(step: int, loss: float) -> None:
        progress(step=step, progress={"phase": "training", "loss": round(loss, 4)})
        metrics.training_progress(settings.queue_train, step=step, loss=loss)
        if step % config.checkpoint_every == 0 and step < total:
            artifacts.save_checkpoint(work / "checkpoint", step)

    result = train_adapter(
        model=run.base_model,
        train=dataset.train,
        out_dir=work,
        config=config,
        taxonomy=run.taxonomy,
        on_step=on_step,
        device=settings.device,
    )
    free_memory()
    return result.adapter_dir, result.steps


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
