"""The packed vision attention gives what transformers' per-segment sdpa loop gives."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from packsight.vlm.attention import PACKED_SDPA, packed_sdpa
from packsight.vlm.tiny import Family, build_tiny_model


def test_equal_and_unequal_segments_match_a_loop() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 23, 8) for _ in range(3))
    module = torch.nn.Module().eval()
    for bounds in ([0, 8, 16, 23], [0, 5, 10, 15, 20, 23], [0, 23], [0, 6, 6, 12, 23]):
        cu = torch.tensor(bounds)
        got, _ = packed_sdpa(module, q, k, v, scaling=0.3, cu_seq_lens_q=cu)
        expected = torch.cat(
            [
                torch.nn.functional.scaled_dot_product_attention(
                    q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=0.3
                ).transpose(1, 2)
                for a, b in pairwise(bounds)
                if b > a
            ],
            dim=1,
        )
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_vision_tower_output_is_unchanged(tmp_path: Path, family: Family) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from packsight.vlm.attention import use_packed_vision_attention

    path = build_tiny_model(tmp_path / family, family=family)
    processor = AutoProcessor.from_pretrained(path)
    frames = np.random.default_rng(1).integers(0, 256, (2, 8, 84, 56, 3), dtype=np.uint8)
    inputs = processor.video_processor(
        videos=list(frames), do_resize=False, do_sample_frames=False, return_tensors="pt"
    )
    from transformers import AttentionInterface

    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        calls.append(1)
        return packed_sdpa(*args, **kwargs)

    outputs = {}
    for name in ("sdpa", PACKED_SDPA):
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa").eval()
        if name == PACKED_SDPA:
            use_packed_vision_attention(model)
            AttentionInterface.register(PACKED_SDPA, counting)
        assert model.model.visual.config._attn_implementation == name
        assert model.config.text_config._attn_implementation == "sdpa"
        with torch.no_grad():
            features = model.model.get_video_features(
                inputs["pixel_values_videos"], inputs["video_grid_thw"]
            ).pooler_output
        outputs[name] = torch.cat(list(features))
    torch.testing.assert_close(outputs[PACKED_SDPA], outputs["sdpa"], rtol=1e-5, atol=1e-5)
    # One call per vision block for both clips and all their frame pairs, not one per pair.
    assert len(calls) == len(model.model.visual.blocks)
    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
