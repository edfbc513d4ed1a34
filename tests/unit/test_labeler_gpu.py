"""The labeler on a CUDA device (skipped elsewhere): the precisions each GPU generation uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from packsight.labels.prediction import ClipPrediction
from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import load_labeler
from packsight.vlm.loading import Quantization
from packsight.vlm.speedups import Speedups
from packsight.vlm.static_decoding import StaticDecoder
from packsight.vlm.tiny import build_tiny_model

pytestmark = pytest.mark.gpu
TAXONOMY = load_taxonomy("assignment")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gpu") / "tiny")


def clips(seeds: range = range(5)) -> list[ClipInput]:
    result = []
    for seed in seeds:
        n = 125 if seed % 2 else 60
        frames = np.random.default_rng(seed).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
        indices = tuple(round(i * (n - 1) / 7) for i in range(8))
        result.append(ClipInput(frames=frames, clip_frame_count=n, frame_indices=indices))
    return result


# bf16 where supported (A100/H100), fp16 as on a T4, each with and without NF4.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_cuda_predictions_are_valid_and_batch_independent(
    tiny: Path, dtype: torch.dtype, quantization: Quantization
) -> None:
    labeler = _labeler(tiny, quantization, dtype, Speedups())
    assert next(labeler.model.parameters()).device.type == "cuda"
    batch = clips()
    batched = labeler.predict(batch)
    for prediction, clip in zip(batched, batch, strict=True):
        assert isinstance(prediction, ClipPrediction), prediction
        assert 0 <= prediction.start_frame <= prediction.end_frame < clip.clip_frame_count
        assert 0 < prediction.confidence <= 1
        # Padding must not change a clip's answer beyond 16-bit rounding: random tiny weights
        # give near-uniform class scores, so compare probabilities rather than the argmax.
        alone = labeler.predict([clip])[0]
        assert isinstance(alone, ClipPrediction), alone
        assert alone.confidence == pytest.approx(prediction.confidence, abs=2e-2)


def more_clips() -> list[ClipInput]:
    """Another batch of the same shape as `clips()`, other frames: a graph replay."""
    return clips(range(10, 15))


def _labeler(tiny: Path, quantization: Quantization, dtype: torch.dtype, speedups: Speedups):
    return load_labeler(
        model=str(tiny),
        adapter=None,
        quantization=quantization,
        device="cuda",
        taxonomy=TAXONOMY,
        batch_size=4,
        dtype=dtype,
        speedups=speedups,
    )


def _decisions(predictions: list) -> list[tuple]:
    return [
        (p.dominant_operation, p.start_frame, p.end_frame, p.anticipated_next_operation)
        for p in predictions
    ]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_cuda_graphs_and_compiled_pieces_give_the_eager_predictions(
    tiny: Path, dtype: torch.dtype, quantization: Quantization
) -> None:
    """The reference is today's eager path on the same fixed inputs. Batches of 4 and then 1
    (5 clips): the graph of the batch of 4 is captured once and replayed after; the partial
    batches are decided eagerly, leaving it in place."""
    eager = _labeler(tiny, quantization, dtype, Speedups.none())
    expected = [eager.predict(clips()), eager.predict(more_clips()), eager.predict(clips())]
    del eager
    graphs = _labeler(tiny, quantization, dtype, Speedups(cuda_graphs=True, compile_vision=False))
    got = [graphs.predict(clips()), graphs.predict(more_clips()), graphs.predict(clips())]
    assert isinstance(graphs.decoder, StaticDecoder)
    assert graphs.decoder.captures == 1 and graphs.decoder.graphs
    # The graphs replay the eager kernels over the same data: identical, probabilities too.
    assert got == expected
    del graphs
    everything = Speedups(compile_vision=True, compile_language=True)
    full = _labeler(tiny, quantization, dtype, everything)
    got = [full.predict(clips()), full.predict(more_clips())]
    assert full.compiled is not None and full.compiled.active, full.compiled
    for want, have in zip(expected, got, strict=False):
        assert _decisions(have) == _decisions(want)
        for a, b in zip(want, have, strict=True):
            assert b.confidence == pytest.approx(a.confidence, abs=2e-3)


def uniform(frame_count: int, seeds: range) -> list[ClipInput]:
    """Clips of one frame count, so one prompt length (the frame numbers are in the prompt)."""
    indices = tuple(round(i * (frame_count - 1) / 7) for i in range(8))
    return [
        ClipInput(
            frames=np.random.default_rng(seed).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8),
            clip_frame_count=frame_count,
            frame_indices=indices,
        )
        for seed in seeds
    ]


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_graphs_of_two_prompt_lengths_are_kept_and_replayed(
    tiny: Path, quantization: Quantization
) -> None:
    short, long = uniform(9, range(4)), uniform(125, range(4, 8))
    eager = _labeler(tiny, quantization, torch.bfloat16, Speedups.none())
    expected = [eager.predict(batch) for batch in (short, long, short, long)]
    del eager
    graphs = _labeler(tiny, quantization, torch.bfloat16, Speedups())
    got = [graphs.predict(batch) for batch in (short, long, short, long)]
    assert isinstance(graphs.decoder, StaticDecoder)
    assert graphs.decoder.captures == 2  # one per length, each replayed after
    assert got == expected


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_the_host_made_prefill_reads_nothing_from_the_gpu_and_keeps_every_answer(
    tiny: Path, quantization: Quantization
) -> None:
    batches = (clips(), more_clips(), uniform(125, range(4)))  # padded, padded, not padded
    default = _labeler(tiny, quantization, torch.bfloat16, Speedups())
    expected = [default.predict(batch) for batch in batches]
    del default
    host = _labeler(tiny, quantization, torch.bfloat16, Speedups(host_vision=True))
    assert [host.predict(batch) for batch in batches] == expected
    batch = clips()[:4]
    counts = [clip.clip_frame_count for clip in batch]
    host.decoder.collect(host.decoder.submit(host._prepared(batch), counts))  # graph captured
    prepared = host._prepared(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host wait on the GPU raises
    try:
        queued = host.decoder.submit(prepared, counts)  # the prefill and the replayed decisions
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert host.decoder.collect(queued) == host.decoder.decode(host._prepared(batch), counts)


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_overlapped_batches_on_a_stream_of_their_own_keep_every_answer(
    tiny: Path, quantization: Quantization
) -> None:
    from packsight.video.framepack import pack_frames, read_frame_pack

    # JPEG frame packs, as a GPU task streams them: decoded on the preparing stream.
    packed = [
        ClipInput(
            read_frame_pack(pack_frames(np.asarray(c.frames), meta={})),
            c.clip_frame_count,
            c.frame_indices,
        )
        for c in clips(range(11)) + uniform(125, range(20, 25))
    ]
    loaders = [lambda clip=clip: clip for clip in packed]
    plain = _labeler(tiny, quantization, torch.bfloat16, Speedups())
    expected = plain.predict_stream(loaders)
    del plain
    overlapped = Speedups(overlap_batches=True, host_vision=True)
    labeler = _labeler(tiny, quantization, torch.bfloat16, overlapped)
    for _ in range(2):  # graphs captured in the first pass, replayed in the second
        assert labeler.predict_stream(loaders) == expected
