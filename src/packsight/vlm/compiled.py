"""torch.compile of the model's memory-bound pieces, each with a clean fallback to eager.

In a batch of 64 clips the vision tower runs ~147,000 patches through 32 blocks, and eagerly every
norm, rotary embedding, activation and residual add is its own pass over memory (the rotary
ones in float32): more GPU time than the tower's matrix products. Inductor fuses them. All
blocks share one compiled graph (parameters are graph inputs); the packed attention stays eager
(it reads segment bounds on the host), so the graph breaks around it. In the language model
(NF4 linears, left eager) the RMS norms and the MLP's silu(gate) * up can be fused the same way;
only for the prefill: the decisions' tiny shapes stay eager, which keeps them capturable in
CUDA graphs and spares compiling for every chunk length.

Inductor's fused bf16/fp16 arithmetic skips the rounding eager does between ops unless told to
emulate it; `emulate_precision_casts` keeps those roundings, to stay as close to the eager
numbers as compiled code can. Reductions (the norms) may still round differently in the last
bit, so compiled and eager outputs are close, not guaranteed bit-identical.

Compilation is lazy: the first batch of a new shape pays for it (reported as warm-up). Any
failure while compiling or running compiled code switches every compiled piece back to eager for
good and reruns that call eagerly: a worker never fails a job because compilation failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from packsight.vlm.patches import Patches, base_model

log = logging.getLogger(__name__)

OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {"emulate_precision_casts": True}
PREFILL_TOKENS = 32  # sequences at least this long run compiled language-model pieces


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


class Compiled(Patches):
    """Routes calls of the patched modules through compiled functions until one fails."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True
        self.failure: str | None = None

    def function(
        self, eager: Callable[..., Any], eligible: Callable[..., bool] | None = None
    ) -> Callable[..., Any]:
        """`eager`, compiled, where `eligible(*args)` (default: always) and until a failure."""
        compiled = torch.compile(eager, options=OPTIONS)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.active and (eligible is None or eligible(*args)):
                try:
                    return compiled(*args, **kwargs)
                except torch.OutOfMemoryError:
                    raise  # the labeler halves the batch; not a reason to give up compiling
                except Exception as exc:
                    self.disable(f"{type(exc).__name__}: {exc}")
            return eager(*args, **kwargs)

        return call

    def disable(self, reason: str) -> None:
        """Back to eager everywhere (from the next call on)."""
        log.warning("compiled model pieces disabled, running eager: %s", reason[:500])
        self.active, self.failure = False, reason


def _compile_vision(compiled: Compiled, base: Any) -> None:
    blocks = getattr(getattr(getattr(base, "model", None), "visual", None), "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
        return
    # One function for the class's forward, the block passed as an argument, so one compiled
    # graph serves all blocks instead of one traced per block.
    forward = compiled.function(type(blocks[0]).forward)
    for block in blocks:
        compiled.patch(block, forward)


def _long(_module: torch.nn.Module, hidden: torch.Tensor, *_: Any) -> bool:
    return hidden.dim() == 3 and hidden.shape[1] >= PREFILL_TOKENS


def _compile_language(compiled: Compiled, base: Any) -> None:
    text = getattr(getattr(base, "model", None), "language_model", None)
    layers = getattr(text, "layers", None)
    if text is None or not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return
    norms = [text.norm] + [
        n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    norm_forward = compiled.function(type(norms[0]).forward, _long)
    for norm in norms:
        compiled.patch(norm, norm_forward)
    if getattr(text.config, "hidden_act", None) != "silu":
        return  # the fused activation below is silu's
    fused = compiled.function(silu_mul, lambda gate, _up: _long(text, gate))

    def mlp_forward(mlp: Any, x: torch.Tensor) -> torch.Tensor:
        # What the MLP computes (down(act(gate(x)) * up(x))), the product fused with the act.
        return mlp.down_proj(fused(mlp.gate_proj(x), mlp.up_proj(x)))

    for layer in layers:
        mlp = layer.get_submodule("mlp")
        compiled.patch(mlp, mlp_forward)


def compile_model(model: torch.nn.Module, *, vision: bool, language: bool) -> Compiled | None:
    """Compile the loaded model's vision blocks and/or language-model norms and activations;
    None when neither is asked for."""
    if not (vision or language):
        return None
    compiled, base = Compiled(), base_model(model)
    if vision:
        _compile_vision(compiled, base)
    if language:
        _compile_language(compiled, base)
    return compiled
