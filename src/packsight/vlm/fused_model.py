"""Routing a loaded model's elementwise steps through the fused kernels (fused.py): which
modules and functions of the Qwen2-VL / Qwen2.5-VL implementations they replace, and how the
replacement is confined to the fused model's own forward."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch

from packsight.vlm.fused import (
    quick_gelu,
    rms_norm,
    rotary_text,
    rotary_vision,
    silu_mul,
    sixteen_bit,
    usable,
)
from packsight.vlm.patches import Patches, base_model

log = logging.getLogger(__name__)

# The models call module-level rotary functions; each is replaced by one that runs the fused
# kernel while this thread is inside the vision tower's (or language model's) forward of a
# model whose kernels are fused (forward hooks below), and the library's own function
# otherwise, so that another model in the process (an eager reference) is untouched.
_inside = threading.local()
_MODELLING = (
    "transformers.models.qwen2_vl.modeling_qwen2_vl",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
)


def _either(fused: Callable[..., Any], eager: Callable[..., Any], *args: Any) -> Any:
    """`fused(*args)`, or `eager(*args)` once a kernel has failed (a shape Triton will not
    compile, say): the same values either way, so a forward never fails for a kernel's sake
    and from then on the process runs the eager ops."""
    global _failed
    if not _failed:
        try:
            return fused(*args)
        except torch.OutOfMemoryError:
            raise  # the labeler halves the batch
        except Exception as exc:
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise  # the capture fails either way; its caller stays eager
            log.warning("a fused kernel failed, running the eager ops from now on: %s", exc)
            _failed = True
    return eager(*args)


_failed = False


def _vision_rotary(eager: Callable[..., Any]) -> Callable[..., Any]:
    def apply(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Any:
        if _active("vision") and sixteen_bit(q, k) and q.dim() == cos.dim() + 1 == 3:
            return _either(rotary_vision, eager, q, k, cos, sin)
        return eager(q, k, cos, sin)

    return apply


def _text_rotary(eager: Callable[..., Any]) -> Callable[..., Any]:
    def apply(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              unsqueeze_dim: int = 1) -> Any:  # fmt: skip
        same = sixteen_bit(q, k, cos, sin) and len({q.dtype, k.dtype, cos.dtype, sin.dtype}) == 1
        if _active("language") and same and unsqueeze_dim == 1 and q.dim() == cos.dim() + 1 == 4:
            return _either(rotary_text, eager, q, k, cos, sin)
        return eager(q, k, cos, sin, unsqueeze_dim)

    return apply


def _route(function: str, router: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    import importlib

    for name in _MODELLING:
        module = importlib.import_module(name)
        eager = getattr(module, function, None)
        if eager is None or hasattr(eager, "_packsight_eager"):
            continue  # absent here, or routed already
        routed = router(eager)
        routed._packsight_eager = eager  # type: ignore[attr-defined]
        setattr(module, function, routed)


def _active(part: str) -> bool:
    return getattr(_inside, part, 0) > 0


def _hooks(fused: Fused, module: torch.nn.Module, part: str) -> None:
    """Count this thread into `part` for the length of `module`'s forward."""

    def enter(*_: object) -> None:
        setattr(_inside, part, getattr(_inside, part, 0) + 1)

    def leave(*_: object) -> None:
        setattr(_inside, part, max(getattr(_inside, part, 0) - 1, 0))

    fused.hooks.append(module.register_forward_pre_hook(enter))
    fused.hooks.append(module.register_forward_hook(leave, always_call=True))


class Fused(Patches):
    """The modules whose forward runs fused kernels and the hooks that mark their forwards;
    `remove` restores them."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Any] = []

    def remove(self) -> None:
        super().remove()
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def _gelu_forward(act: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    own = type(act).forward
    return _either(quick_gelu, lambda *_: own(act, x), x) if sixteen_bit(x) else own(act, x)


def _mlp_forward(mlp: Any, x: torch.Tensor) -> torch.Tensor:
    # What the gated MLP computes, down(act(gate(x)) * up(x)), the product fused with silu.
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    eager = lambda g, u: mlp.act_fn(g) * u  # noqa: E731
    if sixteen_bit(gate, up):
        return mlp.down_proj(_either(silu_mul, eager, gate, up))
    return mlp.down_proj(eager(gate, up))


def _norm_forward(norm: Any, x: torch.Tensor) -> torch.Tensor:
    own = type(norm).forward
    if sixteen_bit(x) and x.is_contiguous():
        return _either(rms_norm, lambda *_: own(norm, x), x, norm.weight, norm.variance_epsilon)
    return own(norm, x)


def _rms_norms(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The Qwen RMS norms inside `module` (their forward is the one `rms_norm` replaces)."""
    return [
        m
        for m in module.modules()
        if type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")
    ]


def _gated(mlp: Any) -> bool:
    act = type(getattr(mlp, "act_fn", None)).__name__
    return all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")) and act in (
        "SiLUActivation",
        "SiLU",
    )


def fuse_model(
    model: torch.nn.Module, device: torch.device, *, vision: bool, language: bool
) -> Fused | None:
    """Route the loaded model's vision tower and/or its language model (rotary embedding,
    activations, RMS norms) through the fused kernels; None where nothing is asked for or
    the kernels cannot run on `device`."""
    base = base_model(model)
    kind = getattr(base, "dtype", torch.float32)
    if not (vision or language) or not usable(device, kind):
        return None
    fused = Fused()
    visual = getattr(getattr(base, "model", None), "visual", None)
    if vision and visual is not None:
        _route("apply_rotary_pos_emb_vision", _vision_rotary)
        _hooks(fused, visual, "vision")
        for block in getattr(visual, "blocks", []):
            mlp = block.mlp
            if type(getattr(mlp, "act", None)).__name__ == "QuickGELUActivation":
                fused.patch(mlp.act, _gelu_forward)
            elif _gated(mlp):
                fused.patch(mlp, _mlp_forward)
        for norm in _rms_norms(visual):
            fused.patch(norm, _norm_forward)
    text = getattr(getattr(base, "model", None), "language_model", None)
    if language and text is not None:
        _route("apply_rotary_pos_emb", _text_rotary)
        _hooks(fused, text, "language")
        for layer in getattr(text, "layers", []):
            mlp = layer.get_submodule("mlp")
            if _gated(mlp):
                fused.patch(mlp, _mlp_forward)
        for norm in _rms_norms(text):
            fused.patch(norm, _norm_forward)
    return fused
