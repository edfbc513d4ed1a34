"""Load a Qwen2-VL / Qwen2.5-VL checkpoint (hub id or local folder), optionally NF4 and LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from packsight.vlm.attention import use_packed_vision_attention

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Quantization = Literal["nf4", "none"]
FAMILIES = ("qwen2_vl", "qwen2_5_vl")
# Module prefixes kept out of NF4: the vision tower (small, and sensitive to quantization) and
# the output head. In transformers 5 the tower lives at `model.visual`; a bare `visual` skips
# nothing.
NF4_SKIP_MODULES = ["model.visual", "lm_head"]


class ModelLoadError(ValueError):
    """The model or adapter cannot be used by the labeler."""


def resolve_device(device: str) -> torch.device:
    """The device for `device`: "auto" is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU has it, fp16 on older GPUs (T4), fp32 on the CPU."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _source_kwargs(name: str) -> dict:
    # Only an existing folder is loaded offline; anything else is a hub id and may download.
    return {"local_files_only": True} if Path(name).exists() else {}


def model_family(model: str) -> str:
    """The model family, "qwen2_vl" or "qwen2_5_vl", read from the checkpoint's config."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, **_source_kwargs(model))
    except OSError as exc:
        raise ModelLoadError(f"cannot read the config of model {model!r}: {exc}") from exc
    if config.model_type not in FAMILIES:
        raise ModelLoadError(
            f"model {model!r} is a {config.model_type!r}; the labeler supports Qwen2-VL and "
            "Qwen2.5-VL checkpoints only"
        )
    return config.model_type


def check_model_available(model: str, *, timeout_s: float = 10.0) -> None:
    """Raise ModelLoadError within about `timeout_s` unless `model` can be loaded here: a local
    checkpoint folder, a hub id already in the local cache, or a hub id the hub answers for.
    (Loading itself retries an unreachable hub for minutes per video; this asks once.)"""
    from transformers import AutoConfig

    if Path(model).exists():
        model_family(model)
        return
    try:
        AutoConfig.from_pretrained(model, local_files_only=True)
        return
    except OSError:
        pass  # not cached: ask the hub once, quickly
    import huggingface_hub

    try:
        huggingface_hub.model_info(model, timeout=timeout_s)
    except Exception as exc:
        raise ModelLoadError(
            f"model {model!r} is not a local folder, not in the Hugging Face cache, and the hub "
            f"did not answer ({type(exc).__name__}: {exc}); set PACKSIGHT_MODEL to a local "
            "checkpoint folder (for a try-out: `packsight tiny-model DIR`)"
        ) from exc


def model_class(family: str) -> type[PreTrainedModel]:
    """The transformers class of a model family."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    return (
        Qwen2VLForConditionalGeneration
        if family == "qwen2_vl"
        else Qwen2_5_VLForConditionalGeneration
    )


def load_model_and_processor(
    *,
    model: str,
    adapter: str | None,
    quantization: Quantization,
    device: torch.device,
    dtype: torch.dtype | None = None,
):
    """The eval-mode model (with its LoRA adapter, if any) and its processor."""
    from transformers import AutoProcessor, BitsAndBytesConfig
    from transformers.utils.logging import disable_progress_bar

    # Per-shard progress bars are noise in worker logs and CLI output.
    disable_progress_bar()
    if quantization not in ("nf4", "none"):
        raise ModelLoadError(f"unknown quantization {quantization!r}: use 'nf4' or 'none'")
    family = model_family(model)
    cls = model_class(family)
    dtype = dtype or compute_dtype(device)
    kwargs: dict = {"dtype": dtype, "attn_implementation": "sdpa", **_source_kwargs(model)}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=NF4_SKIP_MODULES,
        )
        # bitsandbytes quantizes while placing weights, so the device is chosen at load time.
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    network: torch.nn.Module = cls.from_pretrained(model, **kwargs)
    use_packed_vision_attention(network)
    if quantization == "none":
        network = network.to(device)
    if adapter is not None:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter, **_source_kwargs(adapter))
    network.eval()
    processor = AutoProcessor.from_pretrained(model, **_source_kwargs(model))
    return network, processor
