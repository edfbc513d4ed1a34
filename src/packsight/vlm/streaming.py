"""Clips that still have to be loaded, labelled a batch at a time, with the next batch made ready
while the device runs the current one.

A helper thread draws the next batch's loaders, loads the clips (a pool of threads), decodes
their JPEGs on the device and preprocesses them, while the main thread runs the current batch.
On a CUDA device the helper works on a CUDA stream of its own: its JPEG decoding must find its
stream idle (clip_input.py says why), which on the main stream would mean waiting for the
current batch. The main stream waits only for the event that marks the next batch ready, and
the batch's tensors are marked as used there, so that their memory is not handed out again
before the main stream is done with them.

With the `overlap_batches` speed-up the next batch is also queued on the device before the
current one's answers are read, so the GPU has work waiting while the host reads, parses and
hands them over. Results come out in the loaders' order either way, and a batch that fails
comes after every batch before it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, is_dataclass
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
    short_of_memory: bool = False  # loaded, but the device ran out of memory making it

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
    side = preparing_stream(labeler)

    def prepare() -> _Batch:
        with torch.cuda.stream(side) if side is not None else nullcontext():
            batch = _prepare(labeler, list(islice(source, labeler.batch_size)), threads)
            if side is not None:
                batch.ready = torch.cuda.Event()
                batch.ready.record(side)
        return batch

    def launch(batch: _Batch) -> None:
        if batch.ready is not None:
            main = torch.cuda.current_stream(labeler.device)
            main.wait_event(batch.ready)
            for tensor in _device_tensors(batch.inputs):
                tensor.record_stream(main)  # not reused before the main stream is done with it
        batch.launched = labeler._launch(batch.inputs, batch.clips)

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
            batch: _Batch | None = None
            try:
                batch = pending.result()
                if batch.results:
                    pending = helper.submit(prepare)
                if batch.good:
                    launch(batch)
            except torch.OutOfMemoryError:
                if batch is not None:
                    batch.inputs = None  # its memory back before the retry
                if waiting is not None:  # its work is queued: read it before shrinking
                    yield settle(waiting)
                    waiting = None
                if batch is None or not batch.good:
                    raise
                labeler._shrink()
                batch.launched = labeler.predict(batch.clips)
            except Exception:
                # The batch launched before is whole: hand it over before the error, so that
                # the error stands for the clips it came from.
                if waiting is not None:
                    yield settle(waiting)
                raise
            if batch.short_of_memory:
                # Made again here once nothing is in flight, at the lowered size.
                if waiting is not None:
                    yield settle(waiting)
                    waiting = None
                labeler._shrink()
                batch = _make(labeler, batch.results, inputs=False)
                if batch.good:
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


def preparing_stream(labeler: Labeler) -> torch.cuda.Stream | None:
    """The labeler's stream for preparing batches on a CUDA device (None elsewhere), made once:
    streams come from a small pool, and one made per call would in time be handed out again
    to another user, such as a graph capture."""
    if labeler.device.type != "cuda":
        return None
    made = getattr(labeler, "_preparing_stream", None)
    if made is None:
        made = torch.cuda.Stream(labeler.device)
        setattr(labeler, "_preparing_stream", made)  # noqa: B010
    return made


def _device_tensors(value: Any) -> Iterator[torch.Tensor]:
    """The CUDA tensors in a batch's inputs (the processor's output, the `HostVision`)."""
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _device_tensors(item)
    elif is_dataclass(value) and not isinstance(value, type):
        for item in vars(value).values():
            yield from _device_tensors(item)


def _prepare(labeler: Labeler, taken: list, threads: int) -> _Batch:
    """Load the loaders' clips and `_make` their batch. Out of memory on the way, the loaded
    clips come back marked so: the main thread makes them again once it has shrunk."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as pool:
        results: list[Any] = list(pool.map(lambda load: load(), taken))
    try:
        return _make(labeler, results)
    except torch.OutOfMemoryError:
        return _Batch(results, [], None, short_of_memory=True)


def _make(labeler: Labeler, results: list[Any], *, inputs: bool = True) -> _Batch:
    """Check and decode the loaded clips (errors take their places in `results`), and make
    the usable ones' model inputs."""
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
    made = labeler._prepared([clip for _, clip in usable]) if usable and inputs else None
    return _Batch(results, usable, made)
