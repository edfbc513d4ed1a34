"""The training benchmark's recipes: the production set-up and loss (what `train_adapter` runs)
and the previous ones they are measured against, each a (model set-up, loss) pair.

Imported after gpu_training.py's decord stand-in: packsight.training.qlora needs decord to import.
"""

from __future__ import annotations

from typing import Any

import torch

from packsight.training.batches import TrainingBatch, answer_loss
from packsight.training.config import TrainingConfig
from packsight.training.qlora import LORA_TARGETS, prepare_for_training

RECIPES = ("previous", "production", "previous_unchecked_vision", "production_answer_logits")


# The models are Any, as in prepare_for_training and answer_loss: a loaded Qwen2-VL or
# Qwen2.5-VL (its class picked by the checkpoint), then that model under peft.
def previous_setup(base: Any, config: TrainingConfig) -> Any:
    """train_adapter's model set-up before this benchmark: input grads on every embedding."""
    from peft import LoraConfig, get_peft_model

    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()  # also hooks the vision tower's patch embedding
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=LORA_TARGETS, bias="none"
    )
    network = get_peft_model(base, lora)
    network.train()
    return network


def previous_setup_unchecked_vision(base: Any, config: TrainingConfig) -> Any:
    """The previous set-up with the vision blocks not checkpointed: the tower in autograd keeps
    every block's activations (a diagnostic, to show what the frozen tower costs in a graph)."""
    network = previous_setup(base, config)
    for block in base.model.visual.blocks:
        block.gradient_checkpointing = False
    return network


def answer_span_loss(model: Any, batch: TrainingBatch) -> torch.Tensor:
    """The previous answer_loss: logits over every answer position (~50 a row)."""
    logits = model(**batch.inputs, logits_to_keep=batch.keep, use_cache=False).logits
    targets = batch.labels[:, -(batch.keep - 1) :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
    )


SETUPS = {
    "previous": (previous_setup, answer_span_loss),
    "previous_unchecked_vision": (previous_setup_unchecked_vision, answer_span_loss),
    "production_answer_logits": (prepare_for_training, answer_span_loss),
    "production": (prepare_for_training, answer_loss),
}
