"""The machine and library versions a benchmark report records, and device synchronisation, so
that a timing covers the work queued on the GPU."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def versions(device: str) -> dict[str, str]:
    cuda = torch.cuda.is_available() and device != "cpu"
    return {
        "gpu": torch.cuda.get_device_name() if cuda else "none (cpu)",
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "bitsandbytes": package_version("bitsandbytes"),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
