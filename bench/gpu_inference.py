"""Labeler throughput on one GPU: free-form generate one clip at a time vs the system path.

For each model family it saves a random-weight model with the real dimensions, then measures
(a) the baseline, `predict([clip])` per clip with free-form generation of 32 tokens (as in our
first GPU measurements), and (b) the system path: what a GPU task runs, i.e. stored frame packs
streamed through `Labeler.predict_stream` (constrained decoding in batches, JPEG decode on the
GPU, the next batch prepared while the current one runs). Ratios are against (a) of the same run.

    PYTHONPATH=src:. python bench/gpu_inference.py                     # H100, both families
    PYTHONPATH=src:. python bench/gpu_inference.py --size tiny --device cpu --clips 8 \\
        --batch-sizes 2,4 --baseline-clips 2                       # CPU smoke run

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
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.clip_shape import CLIP_FRAME_COUNT, FRAME_INDICES, FRAMES
from bench.inference_report import gib, print_table, system_over_baseline
from bench.machine import sync, versions
from packsight.labels.taxonomy import load_taxonomy
from packsight.video.framepack import pack_frames, read_frame_pack
from packsight.vlm.architectures import FAMILIES, REAL_NAMES, build_random_model
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import Labeler, load_labeler
from packsight.vlm.parsing import OutputParseError

# --out by default: the repository's results folder, dated (docs/benchmarks.md).
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
PACK_POOL = 64  # distinct packs, cycled: content does not change the timing, packing costs time
SERVICE_MODULES = ("celery", "sqlalchemy", "pydantic_settings", "decord", "boto3")


class ForwardCounter:
    """Counts the model's forward passes and prompt tokens, whichever decoding loop drives them."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.prefills = self.steps = self.prompt_tokens = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        # Only the prefill carries the video; later forwards extend the KV cache.
        if kwargs.get("pixel_values_videos") is None:
            self.steps += 1
            return
        mask = kwargs.get("attention_mask")
        self.prefills += 1
        self.prompt_tokens += int(mask.sum()) if mask is not None else ids.numel()


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


def unpacked(pack: bytes) -> Callable[[], ClipInput]:
    """A loader like the GPU task's: unpack one stored frame pack into a ClipInput."""

    def load() -> ClipInput:
        encoded = read_frame_pack(pack)  # decoded by the labeler, on the GPU, per batch
        return ClipInput(encoded, CLIP_FRAME_COUNT, tuple(encoded.meta["frame_indices"]))

    return load


def breakdown(labeler: Labeler, inputs: Any, batch: int) -> dict[str, float]:
    """Seconds of one batch spent in each step of the system path (synchronised)."""
    device = labeler.device
    marks = [time.perf_counter()]

    def mark() -> None:
        sync(device)
        marks.append(time.perf_counter())

    clips, _ = inputs(0, batch)
    mark()
    model_inputs = labeler._inputs(clips)
    mark()
    with torch.inference_mode():
        labeler.model(**model_inputs, use_cache=True, logits_to_keep=1)
    mark()
    labeler.decoder.decode(model_inputs, [c.clip_frame_count for c in clips])
    mark()
    unpack, preprocess, prefill, decode = (b - a for a, b in pairwise(marks))
    return {
        "unpack": unpack,
        "preprocess": preprocess,
        "prefill": prefill,
        "decisions": decode - prefill,  # decode() repeats the prefill, then 7 small forwards
    }


def run_phase(
    model_dir: Path, args: argparse.Namespace, *, path: str, batch: int, clips: list, packs: list
) -> dict[str, Any]:
    """Load, warm up, time `count` clips in calls of `batch`, free; return the record."""
    system = path == "system"
    options = {"constrained": True} if system else {"constrained": False, "max_new_tokens": 32}
    labeler, load_s = _load(model_dir, args.device, batch, **options)
    device = labeler.device
    cuda = device.type == "cuda"
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if cuda else None
    count = args.clips if system else args.baseline_clips

    def inputs(start: int, n: int) -> tuple[list[ClipInput], float]:
        begin = time.perf_counter()
        if system:
            made = [unpacked(packs[(start + i) % len(packs)])() for i in range(n)]
        else:
            made = [
                ClipInput(clips[(start + i) % len(clips)], CLIP_FRAME_COUNT, FRAME_INDICES)
                for i in range(n)
            ]
        return made, time.perf_counter() - begin

    for call in range(1 if system else args.baseline_warmup):
        labeler.predict(inputs(call * batch, batch)[0])
    counter = ForwardCounter(labeler.model)
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    errors, unpack_s = 0, 0.0
    start = time.perf_counter()
    if system:
        # What a GPU task does: loaders that fetch+unpack each clip's frame pack, streamed
        # through the labeler, which loads batch k+1 while the GPU runs batch k.
        loaders = [unpacked(packs[i % len(packs)]) for i in range(count)]
        errors = sum(isinstance(r, Exception) for r in labeler.predict_stream(loaders))
    else:
        for first in range(0, count, batch):
            chunk, spent = inputs(first, min(batch, count - first))
            unpack_s += spent
            errors += sum(isinstance(r, OutputParseError) for r in labeler.predict(chunk))
    sync(device)
    seconds = time.perf_counter() - start
    counter.handle.remove()
    phases = breakdown(labeler, inputs, batch) if system else {}
    record = {
        "phase_s_per_batch": phases,
        "path": path,
        "batch": batch,
        "effective_batch": getattr(labeler, "batch_size", batch),  # lowered after an OOM
        "clips": count,
        "seconds": seconds,
        "clips_per_s": count / seconds,
        "s_per_clip": seconds / count,
        # Baseline: frames are handed over unpacked. System: unpacking overlaps the GPU, so
        # its cost shows in the per-batch breakdown, measured serially.
        "unpack_s_per_clip": phases["unpack"] / batch if system else unpack_s / count,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "weights_gib": weights_gib,
        "load_s": load_s,
        "prompt_tokens_per_clip": counter.prompt_tokens / count,
        "forwards_per_batch": (counter.prefills + counter.steps) / max(counter.prefills, 1),
        "parse_errors": errors,
    }
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
        "settings": vars(args) | {"out": str(args.out), "model_dir": str(args.model_dir or "")},
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
            phases = [("baseline", 1)] + [("system", b) for b in args.batch_sizes]
            for path, batch in phases:
                record = run_phase(
                    model_dir, args, path=path, batch=batch, clips=clips, packs=packs
                )
                record |= {
                    "family": family,
                    "model": REAL_NAMES[family] if args.size == "real" else "tiny",
                }
                report["results"].append(record)
                timings = " ".join(f"{k}={v:.3f}s" for k, v in record["phase_s_per_batch"].items())
                print(
                    f"{family} {path} batch {batch}: {record['clips_per_s']:.2f} clips/s, "
                    f"peak {gib(record['peak_gib'])} GiB, load {record['load_s']:.1f} s {timings}",
                    flush=True,
                )
                report["ratios"] = system_over_baseline(report["results"])
                # Written after every phase, so a run cut short still leaves its numbers.
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
