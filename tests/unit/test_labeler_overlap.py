"""Batches streamed with and without the overlap (the next batch launched before the current
one's answers are read), on CPU with the tiny model: the order of launches and reads, a batch
that fails after every batch before it, and out of memory while preparing a batch recovered."""

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch
from labeler_clips import TAXONOMY, make_clip

from packsight.labels.prediction import ClipPrediction
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.decoding import Queued
from packsight.vlm.labeler import Labeler
from packsight.vlm.speedups import Speedups

L = TypeVar("L", bound=Labeler)


def sibling(labeler: Labeler, kind: type[L], *, batch_size: int, overlap: bool) -> L:
    """A labeler of `kind` over the shared tiny model."""
    return kind(
        model=labeler.model,
        processor=labeler.processor,
        taxonomy=TAXONOMY,
        device=labeler.device,
        model_version_name=kind.__name__,
        batch_size=batch_size,
        speedups=Speedups(overlap_batches=overlap),
    )


def loaders_of(clips: list[ClipInput]) -> list[Callable[[], ClipInput | Exception]]:
    # mypy cannot type a lambda whose extra, defaulted parameter binds the loop's clip.
    return [lambda clip=clip: clip for clip in clips]  # type: ignore[misc]


class OrderLabeler(Labeler):
    """Notes when each batch is launched on the device and when its answers are read."""

    log: list[str]

    def _launch(self, inputs: dict, clips: list[ClipInput]) -> Queued | list:
        self.log.append("launch")
        return super()._launch(inputs, clips)

    def _finish(self, launched: Queued | list, clips: list[ClipInput]) -> list:
        self.log.append("read")
        return super()._finish(launched, clips)


@pytest.mark.parametrize("overlap", [False, True])
def test_overlapped_batches_launch_before_the_answers_before_them_are_read(
    labeler: Labeler, overlap: bool
) -> None:
    clips = [make_clip(seed, 125 if seed % 2 else 60) for seed in range(7)]
    ordered = sibling(labeler, OrderLabeler, batch_size=3, overlap=overlap)
    ordered.log = []
    expected = ordered.predict(clips)  # the same batches of 3, 3 and 1
    ordered.log = []
    assert ordered.predict_stream(loaders_of(clips)) == expected
    if overlap:  # batch k+1 is queued before batch k is read; the last read at the end
        assert ordered.log == ["launch", "launch", "read", "launch", "read", "read"]
    else:
        assert ordered.log == ["launch", "read"] * 3


class ThirdBatchFails(Labeler):
    """Raises `error` once, making its third batch's inputs."""

    error: Exception
    prepared = 0

    def _prepared(self, clips: list[ClipInput]) -> Any:
        self.prepared += 1
        if self.prepared == 3:
            raise self.error
        return super()._prepared(clips)


@pytest.mark.parametrize("overlap", [False, True])
def test_a_batch_that_fails_comes_after_every_batch_before_it(
    labeler: Labeler, overlap: bool
) -> None:
    failing = sibling(labeler, ThirdBatchFails, batch_size=2, overlap=overlap)
    failing.error = RuntimeError("the processor failed on batch 3")
    handed: list[list] = []
    with pytest.raises(RuntimeError, match="batch 3"):
        for results in failing.stream(loaders_of([make_clip(seed, 60) for seed in range(7)])):
            handed.append(results)
    # Both batches before the failure are handed over whole, so the error stands for the
    # clips of the third (a delivery blames the clips it has no answer for).
    assert [len(batch) for batch in handed] == [2, 2]
    assert all(isinstance(r, ClipPrediction) for batch in handed for r in batch)


@pytest.mark.parametrize("overlap", [False, True])
def test_out_of_memory_while_preparing_shrinks_and_loses_nothing(
    labeler: Labeler, overlap: bool
) -> None:
    short = sibling(labeler, ThirdBatchFails, batch_size=2, overlap=overlap)
    short.error = torch.OutOfMemoryError("CUDA out of memory (simulated, while preparing)")
    loaders = loaders_of([make_clip(seed, 60) for seed in range(7)])
    loaders.insert(5, lambda: make_clip(99, 60, size=50))  # unusable, in the batch that fails
    results = short.predict_stream(loaders)
    assert short.batch_size == 1  # halved once, for the batch that could not be made
    assert len(results) == len(loaders) and isinstance(results[5], ValueError)
    assert all(isinstance(r, ClipPrediction) for i, r in enumerate(results) if i != 5)
