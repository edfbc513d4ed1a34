"""QLoRA fine-tuning of the labeler's model on `TrainingExample`s, resumable after a crash.

The lean recipe from our GPU measurements (docs/benchmarks.md, "QLoRA training memory"): NF4
base, LoRA on the language model's linear layers only, non-reentrant gradient checkpointing
without peft's fp32 upcast, a frozen vision tower run without autograd, and logits computed only
where the answer is supervised. Inputs are built by the labeler itself (same chat template, HEAD
and frame handling), so training sees exactly what inference sees, and targets are
`AnswerFormat.answer_token_ids`, the tokens the decoder reads (training_batches.py). A crash
resumes from the last checkpoint (training_checkpoints.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from packsight.labels.taxonomy import Taxonomy
from packsight.training.batches import answer_loss, training_batch
from packsight.training.checkpoints import (
    existing_checkpoint,
    load_checkpoint,
    replace_dir,
    save_checkpoint,
)
from packsight.training.config import TrainingConfig
from packsight.training.examples import TrainingExample
from packsight.training.loss_scaling import LossScaling
from packsight.vlm.labeler import Labeler
from packsight.vlm.loading import compute_dtype, load_model_and_processor, resolve_device

# Attention and MLP projections of the language model; by default the vision tower stays frozen.
LORA_TARGETS = (
    r"model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
)
# With `lora_vision`, the vision blocks' projections too (Qwen2-VL: attn.qkv/proj, mlp.fc1/fc2;
# Qwen2.5-VL: attn.qkv/proj, mlp.gate/up/down_proj).
VISION_LORA_TARGETS = (
    r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|gate_proj|up_proj|down_proj))"
)


@dataclass
class TrainingResult:
    adapter_dir: Path
    steps: int
    losses: list[float]  # one per optimizer step, including steps done before a resume
    resumed_from: int | None = None  # the checkpoint step this call continued from


def prepare_for_training(base: Any, config: TrainingConfig) -> Any:
    """The loaded (NF4) model wrapped with LoRA and set up to train in little GPU memory.

    No prepare_model_for_kbit_training: its fp32 upcast of every unquantized weight nearly doubles
    GPU memory. Checkpointing is non-reentrant, so LoRA weights get gradients without any input
    requiring grad; `enable_input_require_grads` would also hook the vision tower's patch
    embedding and drag the frozen tower into autograd."""
    from peft import LoraConfig, get_peft_model

    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=f"({LORA_TARGETS})|({VISION_LORA_TARGETS})"
        if config.lora_vision
        else LORA_TARGETS,
        modules_to_save=list(config.train_modules) or None,
        bias="none",
    )
    network = get_peft_model(base, lora)
    base.disable_input_require_grads()  # peft adds these hooks for unquantized models
    visual = base.model.visual
    if not any(p.requires_grad for p in visual.parameters()):
        # Nothing to train in the tower: run it as inference, no graph and no checkpointing.
        visual.forward = torch.no_grad()(visual.forward)
    network.train()
    return network


def micro_batch(config: TrainingConfig, examples: int, index: int) -> list[int]:
    """Example indices of micro-batch `index`: a pure function of (seed, index), so a resumed run
    sees the same data as an uninterrupted one. Epochs are reshuffled and flow into each other."""
    picks = []
    for k in range(index * config.batch_size, (index + 1) * config.batch_size):
        epoch, position = divmod(k, examples)
        order = np.random.default_rng([config.seed, epoch]).permutation(examples)
        picks.append(int(order[position]))
    return picks


def train_adapter(
    *,
    model: str,
    train: Sequence[TrainingExample],
    out_dir: Path,
    config: TrainingConfig,
    taxonomy: Taxonomy,
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    device: str = "auto",
    dtype: torch.dtype | None = None,
) -> TrainingResult:
    """Train a LoRA adapter; checkpoints go to out_dir/checkpoint, the result to out_dir/adapter."""
    if not train:
        raise ValueError("no training examples")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)  # LoRA's initial weights
    np.random.seed(config.seed)
    target = resolve_device(device)
    dtype = dtype or compute_dtype(target)
    base, processor = load_model_and_processor(
        model=model, adapter=None, quantization=config.quantization, device=target, dtype=dtype
    )
    network = prepare_for_training(base, config)
    precision = LossScaling(network, enabled=target.type == "cuda" and dtype == torch.float16)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    labeler = Labeler(
        model=network,
        processor=processor,
        taxonomy=taxonomy,
        device=target,
        model_version_name="training",
        batch_size=config.batch_size,
    )

    step = 0
    losses: list[float] = []
    resumed_from: int | None = None
    checkpoint = existing_checkpoint(out_dir)
    if resume and checkpoint is not None:
        step, losses = load_checkpoint(checkpoint, network, optimizer, config, precision)
        resumed_from = step
    total = config.total_steps(len(train))
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(config.grad_accumulation):
            picks = micro_batch(config, len(train), step * config.grad_accumulation + micro)
            batch = training_batch(labeler, [train[i] for i in picks])
            with precision.autocast():
                loss = answer_loss(network, batch)
            precision.scaler.scale(loss / config.grad_accumulation).backward()
            step_loss += loss.item() / config.grad_accumulation
        precision.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        precision.scaler.update()
        step += 1
        losses.append(step_loss)
        if step % config.checkpoint_every == 0 or step == total:
            save_checkpoint(out_dir, network, optimizer, config, step, losses, precision)
        if on_step is not None:
            on_step(step, step_loss)

    adapter_dir = out_dir / "adapter"
    replace_dir(adapter_dir, lambda tmp: network.save_pretrained(tmp))
    summary = {
        "base_model": model,
        "config": asdict(config),
        "steps": step,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "resumed_from": resumed_from,
        "examples": len(train),
        "compute_dtype": str(dtype).removeprefix("torch."),
        "loss_scaling": precision.enabled,
    }
    (adapter_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainingResult(adapter_dir, step, losses, resumed_from)
