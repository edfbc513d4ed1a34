"""The GPU stage's tests' view of a delivery: the real labeler, watched call by call, and the
contexts and archive they run on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_jobs import submit, units

from packsight.models.tables.work import UnitKind, WorkUnit
from packsight.pipeline import label_delivery, stages
from packsight.pipeline.context import Context


class Calls:
    """What the real labeler was asked to predict, call by call (clips per call); `before`
    runs inside a call, before the model does; `in_batch` as the model starts each batch (its
    clips drawn, the next batch's being drawn); `after_batch` after the delivery took each
    batch's results; `batch_size`, if set, is the labeler's for the test."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.before: Callable[[int], None] | None = None
        self.in_batch: Callable[[], None] | None = None
        self.after_batch: Callable[[list[Any]], None] | None = None
        self.batch_size: int | None = None


def watch_labeler(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()
    real = label_delivery.labeler_for

    def recording(version: Any, settings: Any) -> Any:
        labeler = real(version, settings)
        stream, launch = type(labeler).stream, type(labeler)._launch
        if seen.batch_size is not None:
            monkeypatch.setattr(labeler, "batch_size", seen.batch_size)

        def running(*args: Any) -> Any:
            if seen.in_batch is not None:
                seen.in_batch()
            return launch(labeler, *args)

        def counted(loaders: Iterable[Any], **kwargs: Any) -> Iterator[Any]:
            seen.sizes.append(0)
            call = len(seen.sizes)
            if seen.before is not None:
                seen.before(call)

            def counting() -> Iterator[Any]:
                for loader in loaders:
                    seen.sizes[call - 1] += 1
                    yield loader

            for results in stream(labeler, counting(), **kwargs):
                yield results
                if seen.after_batch is not None:
                    seen.after_batch(results)

        monkeypatch.setattr(labeler, "stream", counted)
        monkeypatch.setattr(labeler, "_launch", running)
        return labeler

    monkeypatch.setattr(label_delivery, "labeler_for", recording)
    return seen


def worker_context(ctx: Context, redis_url: str, **settings: Any) -> Context:
    """A GPU worker's context: a broker to publish to, so deliveries keep heartbeats."""
    from packsight.workers.broker import publisher_for

    changes = {"broker_url": redis_url, "stale_after_s": 2.0, **settings}
    tuned = ctx.settings.model_copy(update=changes)
    return Context(tuned, publisher_for(tuned))


def short_videos(tmp_path: Path) -> Path:
    """A local root of four short videos: one label unit of one or two clips each."""
    from packsight.video.synth import write_synthetic_archive

    root = tmp_path / "local-root"
    write_synthetic_archive(root / "videos", videos=4, seed=11, min_seconds=6, max_seconds=11)
    return root


def sampled(ctx: Context, job_id: str) -> list[WorkUnit]:
    """Run the job's sample units; its label units, in order."""
    for unit in units(ctx, job_id, UnitKind.SAMPLE):
        stages.run(ctx, unit.id)
    return units(ctx, job_id, UnitKind.LABEL)


def sampled_job(ctx: Context) -> tuple[str, list[WorkUnit]]:
    """A job over the archive, its sample units run: its id and its label units, in order."""
    job_id = submit(ctx)
    return job_id, sampled(ctx, job_id)
