"""Where a training step's GPU memory goes: memory at the edges of the vision tower and the
language model, and what was live at the step's peak, by the model-code line that allocated it."""

from __future__ import annotations

from typing import Any

import torch

GB = 1e9


class PhaseMemory:
    """GPU memory in use and the running peak at the edges of the vision tower and the language
    model, so the phase that raises the peak shows (the peak only grows within a step)."""

    # `base`: a loaded Qwen2-VL or Qwen2.5-VL, Any as in packsight.training.qlora (its class
    # follows the checkpoint; torch.nn.Module would type `base.model.visual` as a tensor).
    def __init__(self, base: Any, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: dict[str, dict[str, float]] = {}
        self.handles = []
        for name, module in (("vision", base.model.visual), ("lm", base.model.language_model)):
            self.handles.append(
                module.register_forward_pre_hook(lambda *_, n=name: self.mark(f"{n}_start"))
            )
            self.handles.append(
                module.register_forward_hook(lambda *_, n=name: self.mark(f"{n}_end"))
            )

    def mark(self, name: str) -> None:
        if self.cuda:
            self.marks[name] = {
                "allocated_gb": torch.cuda.memory_allocated() / GB,
                "peak_so_far_gb": torch.cuda.max_memory_allocated() / GB,
            }

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def peak_breakdown(step: Any, device: torch.device, top: int = 14) -> list[dict[str, Any]]:
    """Run `step()` once with the allocator's trace on and return what was live at its peak:
    bytes grouped by the innermost model-code line that allocated them, largest first. Memory
    allocated before the step (weights, optimizer state) shows as one "before the step" row."""
    torch.cuda.memory._record_memory_history(context="alloc", stacks="python", max_entries=10**6)
    before = torch.cuda.memory_allocated(device)
    step()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    events = snapshot["device_traces"][device.index or 0]
    live: dict[int, int] = {}
    current = peak = 0
    peak_at = -1
    for index, event in enumerate(events):
        if event["action"] == "alloc":
            live[event["addr"]] = index
            current += event["size"]
        elif event["action"] == "free_requested" and event["addr"] in live:
            del live[event["addr"]]
            current -= event["size"]
        if current > peak:
            peak, peak_at = current, index
    live = {}
    for index, event in enumerate(events[: peak_at + 1]):
        if event["action"] == "alloc":
            live[event["addr"]] = index
        elif event["action"] == "free_requested":
            live.pop(event["addr"], None)
    groups: dict[str, int] = {"before the step (weights, LoRA, optimizer)": before}
    for index in live.values():
        key = _allocation_site(events[index].get("frames", []))
        groups[key] = groups.get(key, 0) + events[index]["size"]
    ranked = sorted(groups.items(), key=lambda kv: -kv[1])
    return [{"site": site, "gb": size / GB} for site, size in ranked[:top]] + [
        {"site": "total at the traced peak", "gb": (before + peak) / GB}
    ]


def _allocation_site(frames: list[dict[str, Any]]) -> str:
    """The innermost frame in model code (transformers models, peft, bitsandbytes, packsight)."""
    wanted = ("transformers/models", "peft/", "bitsandbytes/", "packsight/", "bench/")
    for frame in frames:
        if any(part in frame["filename"] for part in wanted):
            where = frame["filename"].split("site-packages/")[-1]
            return f"{where}:{frame['line']} {frame['name']}"
    return frames[0]["name"] if frames else "unknown"
