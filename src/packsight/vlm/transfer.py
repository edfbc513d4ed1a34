"""Copies from the host to the device that do not make the host wait for the GPU.

A copy from ordinary (pageable) host memory waits until the stream has run everything queued
on it; while a batch runs, that is the whole batch. Through pinned memory the copy is queued
like a kernel instead, and the host goes on.
"""

from __future__ import annotations

import torch


def send(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`, queued without waiting on a CUDA device."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def longs(values: list[int], device: torch.device) -> torch.Tensor:
    """`torch.tensor(values, device=device, dtype=torch.long)`, without the wait."""
    return send(torch.tensor(values, dtype=torch.long), device)
