"""The labeler's speed-ups against today's eager path, on CPU with the tiny models: the decisions
over a preallocated KV cache (what the CUDA graphs replay) give exactly the eager predictions,
M-RoPE positions computed on the host give exactly the predictions of the model computing its
own, a compiled vision tower gives the eager predictions, a compile failure falls back to eager,
and the switches apply on CUDA only (the host positions everywhere)."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from labeler_clips import TAXONOMY, assert_same_answer, make_clip

from packsight.vlm.compiled import compile_model
from packsight.vlm.decoding import HOST_MASK
from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.speedups import Speedups
from packsight.vlm.static_decoding import StaticDecoder

# Different clip lengths give prompts of different lengths: left padding in every batch.
FIRST = [make_clip(5, 125), make_clip(6, 37), make_clip(7, 9)]
SECOND = [make_clip(8, 60), make_clip(9, 125), make_clip(10, 1000)]


def reference(labeler: Labeler) -> list:
    return labeler.predict(FIRST) + labeler.predict(SECOND) + labeler.predict(FIRST[:2])


def tiny_labeler(path: Path) -> Labeler:
    return load_labeler(model=str(path), adapter=None, quantization="none", taxonomy=TAXONOMY)


def static_decoder(labeler: Labeler) -> StaticDecoder:
    """The labeler's decoder, made the static-cache one (no graphs on the CPU)."""
    labeler.decoder = static = StaticDecoder(labeler.model, labeler.answer_format, graphs=False)
    return static


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_static_cache_decisions_equal_the_eager_decoder(
    tiny_models: dict[str, Path], family: str
) -> None:
    labeler = tiny_labeler(tiny_models[family])
    expected = reference(labeler)
    static = static_decoder(labeler)
    # New buffers for the first batch, reused (copied into) for the second of the same shape,
    # new again for the smaller third: predictions equal to the last bit every time.
    assert reference(labeler) == expected
    assert static.captures == 0  # no graphs on the CPU


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_prompts_of_another_length_keep_the_buffers_and_the_shapes_met_before(
    tiny_models: dict[str, Path], family: str
) -> None:
    labeler = tiny_labeler(tiny_models[family])
    expected = [labeler.predict(FIRST), labeler.predict(SECOND)]
    static = static_decoder(labeler)
    assert labeler.predict(FIRST) == expected[0]
    storage = static._storage
    for _ in range(2):  # the prompts differ in length: two shapes over the same buffers
        assert [labeler.predict(FIRST), labeler.predict(SECOND)] == expected
    assert static._storage is storage and len(static._shapes) == 2


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_fewer_syncs_give_the_predictions_of_the_reads_from_the_device(
    tiny_models: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packsight.vlm import attention

    def labeler(fewer_syncs: bool) -> Labeler:
        made = load_labeler(
            model=str(tiny_models[family]),
            adapter=None,
            quantization="none",
            taxonomy=TAXONOMY,
            speedups=replace(Speedups.none(), fewer_syncs=fewer_syncs),
        )
        static_decoder(made)
        return made

    syncing, fewer = labeler(False), labeler(True)
    assert HOST_MASK not in syncing._prepared(FIRST) and HOST_MASK in fewer._prepared(FIRST)
    reads: list[int] = []
    real = attention._read_bounds

    def counted(tensor: torch.Tensor) -> list[int]:
        reads.append(tensor.numel())
        return real(tensor)

    monkeypatch.setattr(attention, "_read_bounds", counted)
    expected = reference(syncing)  # left-padded batches: every step mask differs
    blocks = len(fewer.model.model.visual.blocks)
    assert len(reads) == 3 * blocks  # three forwards, each block read the bounds
    reads.clear()
    assert reference(fewer) == expected
    # Once per forward and distinct tensor (Qwen2.5-VL: windows and whole frames).
    assert 3 <= len(reads) <= 3 * (2 if family == "qwen2_5_vl" else 1)


def test_bounds_are_kept_within_one_vision_forward_only() -> None:
    from packsight.vlm.attention import _close_forward, _open_forward, segment_bounds

    with torch.inference_mode():  # as the labeler runs: such tensors keep no version
        cu = torch.tensor([0, 4, 8])
        assert segment_bounds(cu) == [0, 4, 8]
        cu[1] = 5  # outside a forward, every call reads
        assert segment_bounds(cu) == [0, 5, 8]
        _open_forward()
        try:
            assert segment_bounds(cu) == [0, 5, 8]
            cu[1] = 6  # no tower changes its bounds within a forward: the first read holds
            assert segment_bounds(cu) == [0, 5, 8]
        finally:
            _close_forward()
        _open_forward()  # the next forward reads again
        assert segment_bounds(cu) == [0, 6, 8]
        _close_forward()


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_host_positions_give_the_predictions_of_the_models_own(
    tiny_models: dict[str, Path], family: str
) -> None:
    def labeler(host_positions: bool) -> Labeler:
        return load_labeler(
            model=str(tiny_models[family]),
            adapter=None,
            quantization="none",
            taxonomy=TAXONOMY,
            speedups=replace(Speedups.none(), host_positions=host_positions),
        )

    own, host = labeler(False), labeler(True)
    assert "position_ids" not in own._prepared(FIRST)
    features = host._prepared(FIRST)  # left-padded rows of three lengths
    assert features["position_ids"].shape == (3, *features["input_ids"].shape)
    # Positions and offsets as the forward computes them, to the last bit of every prediction
    # (Qwen2.5-VL's also place the frames in time).
    assert reference(host) == reference(own)
    logits = host.decoder._prefill(features)
    offsets = host.decoder.deltas
    assert torch.equal(own.decoder._prefill(own._prepared(FIRST)), logits)
    assert torch.equal(offsets, own.decoder.deltas)
    # ...and the forward does use them: other positions, other logits.
    features["position_ids"] = features["position_ids"] * 2
    assert not torch.equal(host.decoder._prefill(features), logits)


def test_compiled_vision_and_language_give_the_eager_predictions(
    tiny_models: dict[str, Path],
) -> None:
    labeler = load_labeler(
        model=str(tiny_models["qwen2_vl"]), adapter=None, quantization="none", taxonomy=TAXONOMY
    )
    expected = labeler.predict(FIRST)
    compiled = compile_model(labeler.model, vision=True, language=True)
    assert compiled is not None
    try:
        got = labeler.predict(FIRST)
        assert compiled.active, compiled.failure
    finally:
        compiled.remove()
    # float32 on the CPU: the fused kernels round like eager up to float32 reordering.
    for want, have in zip(expected, got, strict=True):
        assert_same_answer(want, have, confidence_within=1e-5)


def test_a_compile_failure_falls_back_to_eager(
    labeler: Labeler, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = labeler.predict(FIRST[:2])

    def broken(*_: object, **__: object) -> torch.Tensor:
        raise RuntimeError("inductor: no C++ compiler")  # what a bare worker image can give

    # Every compiled piece now fails the way a broken compiler would.
    monkeypatch.setattr(torch, "compile", lambda *_, **__: broken)
    compiled = compile_model(labeler.model, vision=True, language=True)
    assert compiled is not None
    try:
        assert labeler.predict(FIRST[:2]) == expected
        assert not compiled.active and "no C++ compiler" in (compiled.failure or "")
    finally:
        compiled.remove()
    assert labeler.predict(FIRST[:2]) == expected


def test_speedups_apply_on_cuda_only() -> None:
    # By default only the exact ones: compiling changes near-tie decisions (speedups.py).
    assert Speedups() == Speedups(
        cuda_graphs=True,
        fused_kernels=True,
        compile_vision=False,
        compile_language=False,
        host_positions=True,
        fewer_syncs=True,
    )
    everything = Speedups(compile_vision=True, compile_language=True)
    assert everything.for_device(torch.device("cpu")) == replace(
        Speedups.none(), host_positions=True, fewer_syncs=True
    )
    assert everything.for_device(torch.device("cuda")) == everything


def test_fused_kernels_stay_off_on_the_cpu(tiny_models: dict[str, Path]) -> None:
    labeler = tiny_labeler(tiny_models["qwen2_vl"])
    assert labeler.speedups.fused_kernels is False and labeler.fused is None
