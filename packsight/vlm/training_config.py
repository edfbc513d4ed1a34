"""What a fine-tune is configured with; no torch import, so the API and the beat task can
validate a run's settings without loading the ML stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

# Bounds are checked where a run's settings are validated (pydantic, in
# packsight.pipeline.training_runs); constructing the dataclass directly trusts the caller.
Positive = Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class TrainingConfig:
    lora_r: Positive = 8
    lora_alpha: Positive = 16
    lora_dropout: Annotated[float, Field(ge=0)] = 0.0
    # 1e-3 suits the tiny test model; for Qwen2-VL-2B start around 2e-4.
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    epochs: Positive = 1
    max_steps: Positive | None = None  # optimizer steps; overrides epochs when set
    batch_size: Positive = 2
    grad_accumulation: Positive = 2
    checkpoint_every: Positive = 50  # optimizer steps
    seed: int = 42
    quantization: Literal["nf4", "none"] = "nf4"  # as packsight.vlm.loading.Quantization
    # Extra modules trained in full (peft modules_to_save), e.g. ("lm_head",) for a model whose
    # output head is untrained (the tiny test model); pretrained checkpoints need none.
    train_modules: tuple[str, ...] = ()
    # LoRA on the vision tower's blocks as well (for a tower that never saw this kind of video).
    lora_vision: bool = False

    def total_steps(self, examples: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(self.epochs * examples / (self.batch_size * self.grad_accumulation))
