"""Labeler throughput on one GPU: batched HF generate and per-clip generate vs the system path.

For each model family it saves a random-weight model with the real dimensions, then measures
(a) the per-clip baseline, `predict([clip])` with free-form generation of 32 tokens (our first
GPU measurements); (b) batched HF generate: free-form greedy `generate` over batches of
`--generate-batch` clips, as many new tokens as the answer takes, fed like the system path; and
(c) the system path in each of `--variants` (eager; + CUDA graphs; + compiled vision tower;
+ compiled language-model norms and activation: inference_compare.VARIANTS), i.e. what a GPU
task runs: stored frame packs streamed through `Labeler.predict_stream` (constrained decoding in
batches, JPEG decode on the GPU, the next batch prepared while the current one runs). Ratios are
against (a) and (b) of the same run; each variant's decisions are compared with the eager
variant's on the same clips.

    PYTHONPATH=src:. python bench/gpu_inference.py                     # both families
    PYTHONPATH=src:. python bench/gpu_inference.py --size tiny --device cpu --clips 8 \\
        --batch-sizes 2,4 --baseline-clips 2 --generate-batch 4 --variant-batches 2  # CPU smoke

Only packsight modules free of service dependencies are imported: the GPU image lacks
celery, sqlalchemy, pydantic-settings, decord and boto3.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.clip_shape import CLIP_FRAME_COUNT, FRAME_INDICES, FRAMES
from bench.inference_compare import (
    VARIANTS,
    answer_tokens,
    compare_to_eager,
    decisions,
    force_length,
    print_table,
    profile_batch,
    ratios,
)
from bench.inference_report import gib
from bench.inference_steps import ForwardCounter, breakdown, unpacked
from bench.machine import sync, versions
from packsight.labels.taxonomy import load_taxonomy
from packsight.video.framepack import pack_frames
from packsight.vlm.architectures import FAMILIES, REAL_NAMES, build_random_model
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.parsing import OutputParseError

# --out by default: the repository's results folder, dated (docs/benchmarks.md).
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
PACK_POOL = 64  # distinct packs, cycled: content does not change the timing, packing costs time
SERVICE_MODULES = ("celery", "sqlalchemy", "pydantic_settings", "decord", "boto3")


def make_clips(count: int, size: int, seed: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Random clips, and their frame packs with the meta the CPU sampling task writes."""
    rng = np.random.default_rng(seed)
    clips = [rng.integers(0, 256, (FRAMES, size, size, 3), dtype=np.uint8) for _ in range(count)]
    meta = {"key": "bench.mp4", "start_frame": 0, "frame_indices": list(FRAME_INDICES)}
    return clips, [pack_frames(frames, meta=meta) for frames in clips]


def _load(model_dir: Path, device: str, batch_size: int, **kwargs: Any) -> tuple[Labeler, float]:
    kwargs["batch_size"] = batch_size
    start = time.perf_counter()
    labeler = load_labeler(
        model=str(model_dir),
        adapter=None,
        quantization="nf4",
        device=device,
        taxonomy=load_taxonomy("assignment"),
        **kwargs,
    )
    return labeler, time.perf_counter() - start


def run_phase(
    model_dir: Path,
    args: argparse.Namespace,
    *,
    path: str,
    batch: int,
    clips: list,
    packs: list,
    variant: str = "eager",
) -> dict[str, Any]:
    """Load, warm up, time `count` clips in calls of `batch`, free; return the record."""
    streamed = path in ("system", "generate")
    options: dict[str, Any] = {
        "speedups": VARIANTS[variant] if path == "system" else VARIANTS["eager"]
    }
    if path == "system":
        options["constrained"] = True
    else:
        options |= {"constrained": False, "max_new_tokens": 32}
    labeler, load_s = _load(model_dir, args.device, batch, **options)
    if path == "generate":
        labeler.max_new_tokens = answer_tokens(labeler)
        force_length(labeler, labeler.max_new_tokens)
    device = labeler.device
    cuda = device.type == "cuda"
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if cuda else None
    count = args.clips if streamed else args.baseline_clips

    def inputs(start: int, n: int) -> tuple[list[ClipInput], float]:
        begin = time.perf_counter()
        if streamed:
            made = [unpacked(packs[(start + i) % len(packs)])() for i in range(n)]
        else:
            made = [
                ClipInput(clips[(start + i) % len(clips)], CLIP_FRAME_COUNT, FRAME_INDICES)
                for i in range(n)
            ]
        return made, time.perf_counter() - begin

    # Warm-up: for the system path this also compiles and captures (a worker pays it once).
    sync(device)
    warm_start = time.perf_counter()
    for call in range(1 if streamed else args.baseline_warmup):
        labeler.predict(inputs(call * batch, batch)[0])
    sync(device)
    warmup_s = time.perf_counter() - warm_start
    counter = ForwardCounter(labeler.model)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    errors, unpack_s, outcomes = 0, 0.0, []
    start = time.perf_counter()
    if streamed:
        # What a GPU task does: loaders that fetch+unpack each clip's frame pack, streamed
        # through the labeler, which loads batch k+1 while the GPU runs batch k.
        loaders = [unpacked(packs[i % len(packs)]) for i in range(count)]
        outcomes = labeler.predict_stream(loaders)
        errors = sum(isinstance(r, Exception) for r in outcomes)
    else:
        for first in range(0, count, batch):
            chunk, spent = inputs(first, min(batch, count - first))
            unpack_s += spent
            errors += sum(isinstance(r, OutputParseError) for r in labeler.predict(chunk))
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    counter.handle.remove()
    phases = breakdown(labeler, inputs, batch) if path == "system" else {}
    profiled = variant == args.variants[-1] and batch == args.batch_sizes[0]
    if path == "system" and args.profile_dir is not None and cuda and profiled:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        name = f"profile_{labeler.model.config.model_type}_{variant}_{batch}.txt"
        profile_batch(labeler, inputs(0, batch)[0], args.profile_dir / name)
    compiled = labeler.compiled
    record = {
        "phase_s_per_batch": phases,
        "path": path,
        "variant": variant if path == "system" else path,
        "batch": batch,
        "effective_batch": getattr(labeler, "batch_size", batch),  # lowered after an OOM
        "clips": count,
        "seconds": seconds,
        "clips_per_s": count / seconds,
        "s_per_clip": seconds / count,
        # Per-clip baseline: frames are handed over unpacked. Streamed paths: unpacking
        # overlaps the GPU, so its cost shows in the per-batch breakdown, measured serially.
        "unpack_s_per_clip": phases["unpack"] / batch if phases else unpack_s / max(count, 1),
        "peak_gib": peak,
        "weights_gib": weights_gib,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "max_new_tokens": labeler.max_new_tokens if not labeler.constrained else None,
        "graph_captures": getattr(labeler.decoder, "captures", 0),
        "compile_failure": compiled.failure if compiled is not None else None,
        "prompt_tokens_per_clip": counter.prompt_tokens / count,
        "forwards_per_batch": (counter.prefills + counter.steps) / max(counter.prefills, 1),
        "parse_errors": errors,
    }
    if path == "system":
        record["decisions"] = decisions(outcomes)
    del labeler, counter
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return record


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--baseline-clips", type=int, default=8)
    parser.add_argument("--baseline-warmup", type=int, default=2)
    parser.add_argument("--generate-batch", type=int, default=64, help="0: no batched generate")
    parser.add_argument("--variants", default="eager,graphs,full,lm", help=",".join(VARIANTS))
    parser.add_argument("--variant-batches", default="64", help="batches that run every variant")
    parser.add_argument("--profile-dir", type=Path, help="profile one batch per system phase")
    parser.add_argument("--frame-size", type=int, default=336)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, help="keep models here (reused when present)")
    default_out = RESULTS / f"gpu_inference_{datetime.now(UTC):%Y-%m-%d}.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    args.families = [f for f in args.families.split(",") if f]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}: use {','.join(FAMILIES)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.variants = [v for v in args.variants.split(",") if v]
    if set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variants {args.variants}: use {','.join(VARIANTS)}")
    args.variant_batches = [int(b) for b in args.variant_batches.split(",") if b]
    return args


def main() -> None:
    args = _parse_args()
    # Checked before any model loads: accelerate later probes boto3 when it happens to be there.
    leaked = [m for m in SERVICE_MODULES if m in sys.modules]
    if leaked:
        print(f"warning: packsight imported {leaked}, which the GPU image lacks", file=sys.stderr)

    pool = min(PACK_POOL, max(args.clips, args.baseline_clips))
    clips, packs = make_clips(pool, args.frame_size, args.seed)
    report: dict[str, Any] = {
        "env": versions(args.device),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": [],
        "ratios": {},
        "build_s": {},
    }
    with tempfile.TemporaryDirectory(prefix="packsight-bench-") as scratch:
        root = args.model_dir or Path(scratch)
        for family in args.families:
            model_dir = root / f"{family}-{args.size}"
            if not (model_dir / "config.json").exists():
                start = time.perf_counter()
                build_random_model(model_dir, family=family, size=args.size)
                report["build_s"][family] = time.perf_counter() - start
                print(
                    f"built {family} ({args.size}) in {report['build_s'][family]:.1f} s", flush=True
                )
            phases = [("baseline", 1, "-")]
            if args.generate_batch:
                phases.append(("generate", args.generate_batch, "-"))
            for batch in args.batch_sizes:
                # Other batch sizes run the last variant only (the fastest, by default).
                chosen = args.variants if batch in args.variant_batches else args.variants[-1:]
                phases += [("system", batch, v) for v in chosen]
            for path, batch, variant in phases:
                record = run_phase(
                    model_dir,
                    args,
                    path=path,
                    batch=batch,
                    clips=clips,
                    packs=packs,
                    variant=variant if path == "system" else "eager",
                )
                record |= {
                    "family": family,
                    "model": REAL_NAMES[family] if args.size == "real" else "tiny",
                }
                report["results"].append(record)
                timings = " ".join(f"{k}={v:.3f}s" for k, v in record["phase_s_per_batch"].items())
                compare_to_eager(report["results"])
                print(
                    f"{family} {path} {variant} batch {batch}: {record['clips_per_s']:.2f} "
                    f"clips/s, peak {gib(record['peak_gib'])} GiB, load {record['load_s']:.1f} s, "
                    f"warm-up {record['warmup_s']:.1f} s, decisions = eager "
                    f"{record.get('decisions_equal_eager', '-')} {timings}",
                    flush=True,
                )
                report["ratios"] = ratios(report["results"])
                # Written after every phase, so a run cut short still leaves its numbers.
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
