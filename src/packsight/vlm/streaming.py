"""Clips that still have to be loaded, labelled a batch at a time, with the next batch made ready
while the device runs the current one.

A helper thread draws the next batch's loaders, loads the clips (a pool of threads), decodes
their JPEGs on the device and preprocesses them, while the main thread runs the current batch.
With the `overlap_batches` speed-up two more things hold on a CUDA device:
- the helper's device work runs on a CUDA stream of its own, so it neither waits behind the
  current batch's queued kernels nor makes the current batch wait behind it; the main
  stream waits only for the event that marks the batch ready;
- the next batch is queued on the device before the current one's answers are read, so the
  GPU has work waiting while the host reads, parses and hands over the answers.
Results come out in the loaders' order either way.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch

from packsight.vlm.clip_input import ClipInput

if TYPE_CHECKING:
    from packsight.vlm.labeler import Labeler


@dataclass
class _Batch:
    """One batch of loaders taken: a result (or error) per place, the usable clips by place,
    their model inputs, and, once launched, what the device will answer."""

    results: list[Any]
    good: list[tuple[int, ClipInput]]
    inputs: Any  # kept until the batch's answers are read: the device may still use them
    ready: torch.cuda.Event | None = None  # the helper's stream has made `inputs`
    launched: Any = None

    @property
    def clips(self) -> list[ClipInput]:
        return [clip for _, clip in self.good]


def stream(
    labeler: Labeler,
    loaders: Iterable[Callable[[], ClipInput | Exception]],
    *,
    threads: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> Generator[list[Any]]:
    """`Labeler.stream`: each list holds the results of the next `labeler.batch_size` loaders
    taken, in their order; a loader returns its clip or the error that stands in its place."""
    source = iter(loaders)
    overlap = labeler.speedups.overlap_batches and labeler.constrained
    side = torch.cuda.Stream(labeler.device) if overlap and labeler.device.type == "cuda" else None

    def prepare() -> _Batch:
        with torch.cuda.stream(side) if side is not None else nullcontext():
            batch = _prepare(labeler, list(islice(source, labeler.batch_size)), threads)
            if side is not None:
                batch.ready = torch.cuda.Event()
                batch.ready.record(side)
        return batch

    def settle(batch: _Batch) -> list[Any]:
        predictions = labeler._finish(batch.launched, batch.clips)
        for (index, _), prediction in zip(batch.good, predictions, strict=True):
            batch.results[index] = prediction
        batch.inputs = batch.launched = None
        if on_batch is not None:
            on_batch(min(len(batch.good), labeler.batch_size))
        return batch.results  # every place holds a prediction, or the error in its stead

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as helper:
        pending = helper.submit(prepare)
        waiting: _Batch | None = None  # launched, its answers not read yet
        while True:
            batch = pending.result()
            if batch.results:
                pending = helper.submit(prepare)
            if batch.good:
                if batch.ready is not None:
                    torch.cuda.current_stream(labeler.device).wait_event(batch.ready)
                try:
                    batch.launched = labeler._launch(batch.inputs, batch.clips)
                except torch.OutOfMemoryError:
                    if waiting is not None:  # its work is queued: read it before shrinking
                        yield settle(waiting)
                        waiting = None
                    labeler._shrink()
                    batch.launched = labeler.predict(batch.clips)
            if waiting is not None:
                yield settle(waiting)
                waiting = None
            if not batch.results:
                return
            if not batch.good:
                yield batch.results
            elif overlap:
                waiting = batch
            else:
                yield settle(batch)


def _prepare(labeler: Labeler, taken: list, threads: int) -> _Batch:
    """Load the loaders' clips, check and decode them, and make the usable ones' inputs."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as pool:
        results: list[Any] = list(pool.map(lambda load: load(), taken))
    good: list[tuple[int, ClipInput]] = []
    for index, clip in enumerate(results):
        if isinstance(clip, Exception):
            continue
        try:
            labeler._check(clip)
        except ValueError as exc:  # frames of an unusable shape: that clip's error
            results[index] = exc
            continue
        good.append((index, clip))
    decoded = labeler._decode([clip for _, clip in good])
    usable = []
    for (index, _), clip in zip(good, decoded, strict=True):
        if isinstance(clip, Exception):
            results[index] = clip
        else:
            usable.append((index, clip))
    inputs = labeler._prepared([clip for _, clip in usable]) if usable else None
    return _Batch(results, usable, inputs)
