"""The prefill with the host's answers (prefill.py) against the model's own forward, on CPU with
the tiny models: the same logits, cache and predictions to the last bit, with and without left
padding, and none of the reads from the device it replaces."""

from pathlib import Path
from typing import Any

import pytest
import torch
from labeler_clips import TAXONOMY, make_clip

from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.prefill import HOST_VISION, HostVision, host_vision
from packsight.vlm.speedups import Speedups

PADDED = [make_clip(5, 125), make_clip(6, 37), make_clip(7, 9)]  # prompts of three lengths
EVEN = [make_clip(11, 125), make_clip(12, 125)]  # one length: no padding


def labeler(path: Path, *, host: bool) -> Labeler:
    return load_labeler(
        model=str(path),
        adapter=None,
        quantization="none",
        taxonomy=TAXONOMY,
        speedups=Speedups(host_vision=host),
    )


def prefilled(made: Labeler, clips: list) -> tuple[torch.Tensor, list[torch.Tensor]]:
    decoder = made.decoder
    logits = decoder._prefill(made._prepared(clips))
    assert decoder.cache is not None
    layers: list[Any] = list(decoder.cache.layers)
    cached: list[torch.Tensor] = [t for layer in layers for t in (layer.keys, layer.values)]
    decoder.cache = None
    return logits, [*cached, decoder.deltas]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_the_host_made_prefill_computes_what_the_models_forward_does(
    tiny_models: dict[str, Path], family: str
) -> None:
    own, host = labeler(tiny_models[family], host=False), labeler(tiny_models[family], host=True)
    for clips, padded in ((PADDED, True), (EVEN, False)):
        prepared = host._prepared(clips)
        vision = prepared[HOST_VISION]
        assert HOST_VISION not in own._prepared(clips) and vision.padded is padded
        windows = family == "qwen2_5_vl"  # Qwen2.5-VL also attends within windows
        assert ("window_index" in vision.tower) is windows
        want, got = prefilled(own, clips), prefilled(host, clips)
        assert torch.equal(want[0], got[0])
        assert all(torch.equal(a, b) for a, b in zip(want[1], got[1], strict=True))
    assert host.predict(PADDED + EVEN) == own.predict(PADDED + EVEN)


# The tower's grid functions and the precomputed input that spares each its device loop.
GRID_FUNCTIONS = {
    "get_vision_position_ids": "position_ids",
    "get_vision_attention_seqlens": "cu_seqlens",
    "get_vision_window_index": "window_index",
}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_nothing_the_host_knows_is_read_in_the_prefill(
    tiny_models: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import transformers.masking_utils as masking

    from packsight.vlm import attention

    reads: list[str] = []

    def spy(name: str, real, spared_by: str | None = None):
        def called(*args, **kwargs):
            if spared_by is None or spared_by not in (kwargs.get("kwargs") or {}):
                reads.append(name)
            return real(*args, **kwargs)

        return called

    own, host = labeler(tiny_models[family], host=False), labeler(tiny_models[family], host=True)
    monkeypatch.setattr(attention, "_read_bounds", spy("bounds", attention._read_bounds))
    monkeypatch.setattr(masking, "fast_all", spy("padding", masking.fast_all))
    tower = sys.modules[type(host.model.model.visual).__module__]
    for name, spared_by in GRID_FUNCTIONS.items():
        if hasattr(tower, name):
            monkeypatch.setattr(tower, name, spy(name, getattr(tower, name), spared_by))
    for made in (own, host):
        vlm = made.model.model
        monkeypatch.setattr(vlm, "get_placeholder_mask", spy("tokens", vlm.get_placeholder_mask))
    own.decoder._prefill(own._prepared(PADDED))
    # The model's own forward reads all of them (the spies see it)...
    windows = {"get_vision_window_index"} if family == "qwen2_5_vl" else set()
    expected = {"bounds", "padding", "tokens", "get_vision_position_ids"} | windows
    assert set(reads) >= expected | {"get_vision_attention_seqlens"}
    reads.clear()
    # ...and the host-made prefill none.
    host.decoder._prefill(host._prepared(PADDED))
    assert reads == []


def test_batches_it_does_not_cover_take_the_models_forward(tiny_models: dict[str, Path]) -> None:
    host = labeler(tiny_models["qwen2_vl"], host=True)
    features = host._features(PADDED)
    assert isinstance(host_vision(host.model, features), HostVision)
    assert host_vision(host.model, {**features, "pixel_values": torch.zeros(1)}) is None
    assert host_vision(host.model, {k: v for k, v in features.items() if "video" not in k}) is None
    # A prompt whose video tokens do not match its frames is refused, as the model refuses it.
    ids = features["input_ids"].clone()
    ids[0, ids[0] == host.model.config.video_token_id] = 0
    with pytest.raises(ValueError, match="video tokens"):
        host_vision(host.model, {**features, "input_ids": ids})
