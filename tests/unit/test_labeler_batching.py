"""The labeler under memory pressure and streaming (no mocks): out-of-memory batches are halved
without losing a clip, streamed loads keep their errors in place, and JPEG frames decode on the
device with damage confined to its clip."""

from collections.abc import Callable

import pytest
import torch
from labeler_clips import TAXONOMY, frames_of, make_clip

from packsight.labels.prediction import ClipPrediction
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.decoding import Queued
from packsight.vlm.labeler import Labeler
from packsight.vlm.speedups import Speedups


class TightMemoryLabeler(Labeler):
    """A labeler on a device that fits at most `fits` clips at once: bigger batches raise
    the same error CUDA raises."""

    fits = 2
    batches: list[int]

    def _launch(self, inputs: dict, clips: list[ClipInput]) -> Queued | list:
        self.batches.append(len(clips))
        if len(clips) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated device limit)")
        return super()._launch(inputs, clips)


def tight_labeler(
    labeler: Labeler, *, batch_size: int, overlap: bool = False
) -> TightMemoryLabeler:
    """The shared tiny model behind a simulated small device."""
    tight = TightMemoryLabeler(
        model=labeler.model,
        processor=labeler.processor,
        taxonomy=TAXONOMY,
        device=labeler.device,
        model_version_name="tight",
        batch_size=batch_size,
        speedups=Speedups(overlap_batches=overlap),
    )
    tight.batches = []
    return tight


def test_out_of_memory_halves_the_batch_and_loses_nothing(labeler: Labeler) -> None:
    clips = [make_clip(seed, 125 if seed % 2 else 60) for seed in range(7)]
    expected = labeler.predict(clips)
    tight = tight_labeler(labeler, batch_size=8)
    results = tight.predict(clips)
    assert tight.batch_size == 2
    assert tight.batches == [7, 4, 2, 2, 2, 1]  # 8 -> 4 -> 2: pairs, then the last clip
    assert len(results) == len(clips)
    for got, want in zip(results, expected, strict=True):
        assert isinstance(got, ClipPrediction) and isinstance(want, ClipPrediction)
        assert (got.dominant_operation, got.start_frame, got.end_frame) == (
            want.dominant_operation,
            want.start_frame,
            want.end_frame,
        )
    tight.fits = 0
    with pytest.raises(torch.OutOfMemoryError):
        tight.predict(clips[:1])
    assert tight.batch_size == 1


# Overlapped, the next batch is launched before the current one's answers are read.
@pytest.mark.parametrize("overlap", [False, True])
def test_stream_matches_predict_and_keeps_load_errors_in_place(
    labeler: Labeler, overlap: bool
) -> None:
    from packsight.video.framepack import FramePackError

    clips = [make_clip(seed, 125 if seed % 2 else 60) for seed in range(7)]
    expected = labeler.predict(clips)
    # mypy cannot type a lambda whose extra, defaulted parameter binds the loop's clip.
    loaders: list[Callable[[], ClipInput | Exception]] = [
        lambda clip=clip: clip  # type: ignore[misc]
        for clip in clips
    ]
    loaders.insert(3, lambda: FramePackError("pack 3 is corrupt"))
    loaders.append(lambda: make_clip(99, 125, size=50))  # unusable frame size
    tight = tight_labeler(labeler, batch_size=4, overlap=overlap)
    tight.fits = 3  # the first batch of 4 runs out of memory
    sizes: list[int] = []
    results = tight.predict_stream(loaders, on_batch=sizes.append)
    assert len(results) == len(loaders)
    assert isinstance(results[3], FramePackError)
    assert isinstance(results[-1], ValueError) and "multiple of 28" in str(results[-1])
    got = [r for i, r in enumerate(results) if i not in (3, len(loaders) - 1)]
    for prediction, want in zip(got, expected, strict=True):
        assert isinstance(prediction, ClipPrediction) and isinstance(want, ClipPrediction)
        assert (prediction.dominant_operation, prediction.start_frame, prediction.end_frame) == (
            want.dominant_operation,
            want.start_frame,
            want.end_frame,
        )
    assert tight.batch_size == 2
    # Batch 1 holds 3 loadable clips (pack 3 failed) and fits; batch 2 (4 clips) runs out of
    # memory and is redone as two pairs.
    assert tight.batches == [3, 4, 2, 2]
    assert sizes == [3, 2]  # as each batch was settled: the second at the lowered size


def test_jpeg_encoded_frames_decode_on_the_device_and_damage_stays_local(labeler: Labeler) -> None:
    from packsight.video.framepack import pack_frames, read_frame_pack

    clips = [make_clip(seed, 125) for seed in range(3)]
    packs = [read_frame_pack(pack_frames(frames_of(c), meta={})) for c in clips]
    encoded = [
        ClipInput(p, c.clip_frame_count, c.frame_indices) for p, c in zip(packs, clips, strict=True)
    ]
    from_jpeg = labeler.predict(encoded)
    # Same answers as the frames decoded by Pillow (JPEG decoders agree to a grey level).
    from packsight.video.framepack import unpack_frames

    pillow = [
        ClipInput(
            unpack_frames(pack_frames(frames_of(c), meta={}))[0],
            c.clip_frame_count,
            c.frame_indices,
        )
        for c in clips
    ]
    for a, b in zip(from_jpeg, labeler.predict(pillow), strict=True):
        assert isinstance(a, ClipPrediction) and isinstance(b, ClipPrediction)
        assert a.dominant_operation == b.dominant_operation
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)

    damaged = packs[1].jpegs.copy()
    damaged[4] = damaged[4][:40]  # a truncated JPEG
    from dataclasses import replace as copy_with

    loaders = [
        lambda: encoded[0],
        lambda: ClipInput(copy_with(packs[1], jpegs=damaged), 125, clips[1].frame_indices),
        lambda: encoded[2],
    ]
    results = labeler.predict_stream(loaders)
    assert isinstance(results[1], ValueError) and "damaged JPEG" in str(results[1])
    assert isinstance(results[0], ClipPrediction) and isinstance(results[2], ClipPrediction)
