"""Per-instance replacement of a loaded model's module forwards, and its undoing: what the
compiled pieces (compiled.py) and the fused kernels (fused_model.py) both do to a model."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch


class Patches:
    """The modules whose forward was replaced; `remove` restores them all."""

    def __init__(self) -> None:
        self.patched: list[torch.nn.Module] = []

    def patch(self, module: torch.nn.Module, forward: Callable[..., Any]) -> None:
        """Make `forward(module, ...)` the module's forward (an instance attribute)."""
        module.forward = partial(forward, module)
        self.patched.append(module)

    def remove(self) -> None:
        """Restore the modules' own forward (the instance attribute hid the class's)."""
        for module in self.patched:
            vars(module).pop("forward", None)
        self.patched = []


def base_model(model: torch.nn.Module) -> Any:
    """The network itself: a PEFT model holds it inside."""
    unwrap = getattr(model, "get_base_model", None)
    return unwrap() if callable(unwrap) else model
