"""The inference benchmark's comparisons: which speed-ups a system variant uses, how many new
tokens the batched-generate baseline needs, whether a variant's decisions equal the eager path's,
the ratios to the baselines of the same run, and the table printed last."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.inference_report import gib
from packsight.labels.prediction import ClipPrediction
from packsight.vlm.answer import Answer
from packsight.vlm.labeler import Labeler
from packsight.vlm.speedups import Speedups

# System variants: today's eager path, + CUDA graphs for the decisions (with positions made in
# the forward, with GPU values read mid-batch, without the fused kernels, then the default, then
# with the prefill's remaining reads made on the host, and with batches overlapped), +
# compiled vision tower, + compiled norms and activation in the language model's prefill.
UNFUSED = Speedups(fused_kernels=False)
VARIANTS = {
    "eager": Speedups.none(),
    "graphs_device_positions": replace(UNFUSED, host_positions=False, fewer_syncs=False),
    "graphs_syncing": replace(UNFUSED, fewer_syncs=False),
    "graphs_unfused": UNFUSED,
    "graphs": Speedups(cuda_graphs=True, compile_vision=False),
    "graphs_host_vision": Speedups(host_vision=True),
    "graphs_overlap": Speedups(host_vision=True, overlap_batches=True),
    "full": Speedups(cuda_graphs=True, compile_vision=True),
    "lm": Speedups(cuda_graphs=True, compile_vision=True, compile_language=True),
}


def answer_tokens(labeler: Labeler) -> int:
    """New tokens a free-form answer in the constrained format takes: the head the constrained
    path prefills, the answer (any values: digits are zero-padded) and the end of turn."""
    fmt = labeler.answer_format
    return len(fmt.head) + len(fmt.answer_token_ids(Answer(0, 0, 0, 0))) + 1


def force_length(labeler: Labeler, tokens: int) -> None:
    """Make batched generate run all `tokens` steps: random weights could stop early."""
    config = getattr(labeler.model, "generation_config", None)
    if config is not None:
        config.min_new_tokens = tokens


def decisions(results: list[Any]) -> list[tuple | None]:
    """Per clip: (operation, start, end, next, confidence), None for an error."""
    return [
        (
            r.dominant_operation,
            r.start_frame,
            r.end_frame,
            r.anticipated_next_operation,
            r.confidence,
        )
        if isinstance(r, ClipPrediction)
        else None
        for r in results
    ]


def compare_to_eager(results: list[dict[str, Any]]) -> None:
    """Each system record gains how its decisions compare with the eager variant's of the same
    family and batch size on the same clips: identical decisions, largest confidence change."""
    eager = {
        (r["family"], r["batch"]): r["decisions"]
        for r in results
        if r["path"] == "system" and r.get("variant") == "eager"
    }
    for r in results:
        ref = eager.get((r["family"], r["batch"]))
        if r["path"] != "system" or ref is None or "decisions" not in r:
            continue
        pairs = list(zip(ref, r["decisions"], strict=True))
        same = sum(a is not None and b is not None and a[:4] == b[:4] for a, b in pairs)
        deltas = [abs(a[4] - b[4]) for a, b in pairs if a is not None and b is not None]
        r["decisions_equal_eager"] = f"{same}/{len(pairs)}"
        r["max_confidence_delta"] = max(deltas, default=0.0)


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per family, per system variant and batch: clips/s over batched generate and over the
    per-clip baseline of the same run."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in (r for r in results if r["path"] == "system"):
        family = r["family"]
        row: dict[str, float] = {}
        for path, name in (("generate", "over_generate"), ("baseline", "over_per_clip")):
            base = [b for b in results if b["family"] == family and b["path"] == path]
            if base:
                row[name] = r["clips_per_s"] / base[0]["clips_per_s"]
        out.setdefault(family, {})[f"{r['variant']}@{r['batch']}"] = row
    return out


def profile_batch(labeler: Labeler, clips: list, out: Path) -> None:
    """One batch under torch.profiler into `out`: its wall time beside the GPU's kernel time
    (the difference is the GPU idling, waiting for the host), then the kernels and ops by
    their own GPU time."""
    import time

    from torch.profiler import ProfilerActivity, profile

    inputs = labeler._inputs(clips)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        labeler._run(inputs, clips)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    kernels = sum(e.self_device_time_total for e in averages if e.device_type.name == "CUDA")
    table = averages.table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=70)
    out.write_text(
        f"wall {wall:.3f} s (profiled), GPU kernels and copies {kernels / 1e6:.3f} s\n\n{table}"
    )


HEADER = (
    "| family | path | variant | batch | clips/s | peak GiB | warm-up s | prompt tok | fwd/batch "
    "| decisions = eager | x generate | x per-clip |"
)


def print_table(report: dict[str, Any]) -> None:
    env = report["env"]
    print(
        f"\n{env['gpu']} | torch {env['torch']} | transformers {env['transformers']} | "
        f"bitsandbytes {env['bitsandbytes']} | python {env['python']} | {env['date']}"
    )
    print(HEADER + "\n" + "|---" * 12 + "|")
    table = report["ratios"]
    for r in report["results"]:
        key = f"{r.get('variant', '')}@{r['batch']}"
        ratio = table.get(r["family"], {}).get(key, {})
        print(
            f"| {r['family']} | {r['path']} | {r.get('variant', '-')} | {r['batch']} "
            f"| {r['clips_per_s']:.2f} | {gib(r['peak_gib'])} | {r['warmup_s']:.1f} "
            f"| {r['prompt_tokens_per_clip']:.0f} | {r['forwards_per_batch']:.1f} "
            f"| {r.get('decisions_equal_eager', '-')} "
            f"| {ratio.get('over_generate', float('nan')):.2f} "
            f"| {ratio.get('over_per_clip', float('nan')):.1f} |"
        )
