"""Loss scaling for fp16 training (a T4 has no bf16), as torch AMP does it."""

from __future__ import annotations

from typing import Any

import torch


class LossScaling:
    """fp16 compute (a T4 has no bf16) needs loss scaling: an fp16 backward otherwise underflows
    small gradients to zero and can overflow to inf. As in torch AMP, the trainable weights are
    kept in fp32, the forward runs under fp16 autocast and a GradScaler scales the loss and skips
    steps whose gradients overflowed. Disabled (bf16, fp32, CPU) it changes nothing."""

    def __init__(self, network: Any, *, enabled: bool) -> None:
        self.enabled = enabled
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled)
        if enabled:
            for param in network.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()

    def autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.enabled)
