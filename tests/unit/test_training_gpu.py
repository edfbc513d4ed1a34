"""QLoRA training on a CUDA device (skipped elsewhere): finite losses, a saved adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import load_taxonomy
from packsight.training.config import TrainingConfig
from packsight.training.examples import TrainingExample
from packsight.training.qlora import prepare_for_training, train_adapter
from packsight.vlm.loading import load_model_and_processor
from packsight.vlm.tiny import build_tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TAXONOMY = load_taxonomy("assignment")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gpu-train") / "tiny")


def examples(count: int = 4) -> list[TrainingExample]:
    rng = np.random.default_rng(0)
    indices = tuple(round(i * 124 / 7) for i in range(8))
    return [
        TrainingExample(
            clip_id=f"gpu_{i}",
            subject="U0101",
            frames=rng.integers(0, 256, (8, 56, 56, 3), dtype=np.uint8),
            clip_frame_count=125,
            frame_indices=indices,
            truth=ClipTruth(f"gpu_{i}", TAXONOMY.operations[i], 10 * i, 60 + i, "Tape"),
        )
        for i in range(count)
    ]


def test_qlora_steps_on_cuda_give_finite_losses_and_an_adapter(tiny: Path, tmp_path: Path) -> None:
    config = TrainingConfig(max_steps=3, train_modules=("lm_head",))
    result = train_adapter(
        model=str(tiny),
        train=examples(),
        out_dir=tmp_path,
        config=config,
        taxonomy=TAXONOMY,
        device="cuda",
    )
    assert result.steps == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert (result.adapter_dir / "adapter_model.safetensors").exists()
    summary = json.loads((result.adapter_dir / "training.json").read_text())
    assert summary["steps"] == 3


def test_frozen_vision_tower_builds_no_autograd_graph(tiny: Path) -> None:
    # The tower's activations kept for backward were most of a step's GPU memory.
    base, _ = load_model_and_processor(
        model=str(tiny), adapter=None, quantization="nf4", device=torch.device("cuda")
    )
    network = prepare_for_training(base, TrainingConfig())
    outputs = []
    base.model.visual.register_forward_hook(lambda *args: outputs.append(args[-1]))
    vision = base.config.vision_config
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(4, width, device="cuda", dtype=base.model.visual.dtype)
    base.model.visual(pixels, grid_thw=torch.tensor([[1, 2, 2]], device="cuda"))
    assert not outputs[0].pooler_output.requires_grad
    assert any(p.requires_grad for p in network.parameters())


def test_fp16_training_as_on_a_t4_scales_the_loss_and_learns(tiny: Path, tmp_path: Path) -> None:
    # A T4 has no bf16: fp16 compute with AMP-style loss scaling and fp32 trainable weights.
    from safetensors.torch import load_file

    result = train_adapter(
        model=str(tiny),
        train=examples(),
        out_dir=tmp_path,
        config=TrainingConfig(max_steps=10, train_modules=("lm_head",)),
        taxonomy=TAXONOMY,
        device="cuda",
        dtype=torch.float16,
    )
    summary = json.loads((result.adapter_dir / "training.json").read_text())
    assert summary["compute_dtype"] == "float16" and summary["loss_scaling"] is True
    assert all(math.isfinite(loss) for loss in result.losses)
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    # LoRA's B matrices start at zero: non-zero ones prove steps were taken, not all skipped.
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert result.losses[-1] < result.losses[0]
