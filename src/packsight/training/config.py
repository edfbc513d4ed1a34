"""What a fine-tune is configured with; no torch import, so the API and the beat task can
validate a run's settings without loading the ML stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

# Bounds are checked where a run's settings are validated (pydantic, in
# packsight.pipeline.training_runs); constructing the dataclass directly trusts the caller. Upper
# bounds keep client-given numbers inside what the run stores (steps in 32-bit INTEGER columns)
# and what the libraries take (seeds are 32-bit for numpy).
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Size = Annotated[int, Field(ge=1, le=4096)]


@dataclass(frozen=True)
class TrainingConfig:
    lora_r: Size = 8
    lora_alpha: Size = 16
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # 1e-3 suits the tiny test model; for Qwen2-VL-2B start around 2e-4.
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    max_steps: Count | None = None  # optimizer steps; overrides epochs when set
    batch_size: Size = 2
    grad_accumulation: Size = 2
    checkpoint_every: Count = 50  # optimizer steps
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
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
