"""GPU memory and step time of a real-size QLoRA training step, production path vs the previous one.

For each model family it saves a random-weight model with the real dimensions, then runs QLoRA
steps (NF4 base, LoRA on the language model's linear layers, gradient checkpointing) on batches of
random 8-frame clips, through `prepare_for_training` (`packsight.training.qlora`), `training_batch`
and `answer_loss` (`packsight.training.batches`), what `train_adapter` runs per micro-batch.
The previous recipe (`enable_input_require_grads`, logits over the whole answer; all recipes are
in training_recipes.py) runs in the same process as the baseline; `--recipes` picks and orders
them.

    PYTHONPATH=src:. python bench/gpu_training.py                      # H100, both families
    PYTHONPATH=src:. python bench/gpu_training.py --size tiny --device cpu --frame-size 56 \\
        --warmup 1 --steps 2                                       # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

if importlib.util.find_spec("decord") is None:
    # training_examples imports packsight.video.decode, which imports decord; the GPU image lacks it
    # and nothing here decodes video, so an empty stand-in lets the real dataclass load.
    sys.modules["decord"] = types.ModuleType("decord")

from bench.clip_shape import CLIP_FRAME_COUNT, FRAME_INDICES
from bench.gpu_memory import GB, PhaseMemory, peak_breakdown
from bench.machine import sync, versions
from bench.training_recipes import RECIPES, SETUPS
from packsight.labels.metrics import ClipTruth
from packsight.labels.taxonomy import load_taxonomy
from packsight.training.batches import TrainingBatch, training_batch
from packsight.training.config import TrainingConfig
from packsight.training.examples import TrainingExample
from packsight.training.loss_scaling import LossScaling
from packsight.vlm.architectures import FAMILIES, REAL_NAMES, build_random_model
from packsight.vlm.labeler import Labeler
from packsight.vlm.loading import load_model_and_processor, resolve_device

TAXONOMY = load_taxonomy("assignment")
# --out by default: the repository's results folder, dated (docs/benchmarks.md).
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def make_examples(count: int, frames: int, size: int, seed: int) -> list[TrainingExample]:
    rng = np.random.default_rng(seed)
    indices = tuple(round(i * (CLIP_FRAME_COUNT - 1) / (frames - 1)) for i in range(frames))
    indices = FRAME_INDICES if frames == len(FRAME_INDICES) else indices
    return [
        TrainingExample(
            clip_id=f"bench_{i}",
            subject="U0101",
            frames=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
            clip_frame_count=CLIP_FRAME_COUNT,
            frame_indices=indices,
            truth=ClipTruth(f"bench_{i}", "Tape", 14 + i, 98, "Put Items"),
        )
        for i in range(count)
    ]


def run_recipe(model_dir: Path, recipe: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load, set up, warm up, then time `args.steps` micro-batch steps; free; return the record."""
    setup, loss_fn = SETUPS[recipe]
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    config = TrainingConfig(lora_r=args.lora_r, lora_alpha=2 * args.lora_r, lr=2e-4)
    torch.manual_seed(config.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype] if cuda else None
    base, processor = load_model_and_processor(
        model=str(model_dir), adapter=None, quantization="nf4", device=device, dtype=dtype
    )
    weights_gb = torch.cuda.memory_allocated(device) / GB if cuda else None
    network = setup(base, config)
    # fp16 (a T4's compute type) trains as train_adapter does: fp32 trainables, autocast, scaler.
    precision = LossScaling(network, enabled=dtype == torch.float16)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    labeler = Labeler(
        model=network,
        processor=processor,
        taxonomy=TAXONOMY,
        device=device,
        model_version_name="bench",
        batch_size=args.batch,
    )
    examples = make_examples(4 * args.batch, args.frames, args.frame_size, args.seed)
    phases = PhaseMemory(base, device)
    step_s, batch_s, losses, edges = [], [], [], {}

    def one_step(step: int) -> TrainingBatch:
        first = (step * args.batch) % len(examples)
        batch = training_batch(labeler, examples[first : first + args.batch])
        sync(device)
        batch_s.append(time.perf_counter())
        with precision.autocast():
            loss = loss_fn(network, batch)
        phases.mark("loss")
        precision.scaler.scale(loss).backward()
        phases.mark("backward_end")
        precision.scaler.step(optimizer)
        precision.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        return batch

    for step in range(args.warmup + args.steps):
        if step == args.warmup and cuda:
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        batch = one_step(step)
        sync(device)
        batch_s[-1] -= start
        if step >= args.warmup:
            step_s.append(time.perf_counter() - start)
            edges = dict(phases.marks)  # the last timed step's
    phases.remove()
    tokens = int(batch.inputs["attention_mask"].sum()) // args.batch
    peak_allocated = torch.cuda.max_memory_allocated(device) / GB if cuda else None
    peak_reserved = torch.cuda.max_memory_reserved(device) / GB if cuda else None
    # After the timed steps: tracing allocations with their stacks slows a step down.
    breakdown = peak_breakdown(lambda: one_step(0), device) if cuda and args.breakdown else []
    record = {
        "recipe": recipe,
        "dtype": args.dtype if cuda else "float32",
        "peak_allocated_gb": peak_allocated,
        "peak_reserved_gb": peak_reserved,
        "weights_gb": weights_gb,
        "step_s": float(np.median(step_s)),
        "step_s_all": step_s,
        "batch_build_s": float(np.median(batch_s[args.warmup : args.warmup + args.steps])),
        "tokens_per_example": tokens,
        "sequence_length": int(batch.inputs["input_ids"].shape[1]),
        "video_tokens_per_example": int((batch.inputs["input_ids"] == video_token(base)).sum())
        // args.batch,
        "trainable_params": sum(p.numel() for p in params),
        "losses": losses,
        "phase_memory": edges,
        "peak_breakdown": breakdown,
    }
    return record


def video_token(base: Any) -> int:  # a loaded model: its config's fields follow its family
    return int(base.config.video_token_id)


def _ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    baseline = next((r for r in results if r["recipe"] == "previous"), None)
    if baseline is None or baseline["peak_allocated_gb"] is None:
        return {}
    return {
        r["recipe"]: {
            "peak_allocated_over_previous": r["peak_allocated_gb"] / baseline["peak_allocated_gb"],
            "step_s_over_previous": r["step_s"] / baseline["step_s"],
        }
        for r in results
        if r["family"] == baseline["family"]
    }


def _gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_table(report: dict[str, Any]) -> None:
    env = report["env"]
    print(f"\n{env['gpu']} | torch {env['torch']} | transformers {env['transformers']}")
    print("| family | recipe | peak alloc GB | peak reserved GB | step s | tokens/example |")
    print("|---|---|---|---|---|---|")
    for r in report["results"]:
        print(
            f"| {r['family']} | {r['recipe']} | {_gb(r['peak_allocated_gb'])} | "
            f"{_gb(r['peak_reserved_gb'])} | {r['step_s']:.3f} | {r['tokens_per_example']} |"
        )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=336)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument(
        "--dtype", choices=("bf16", "fp16"), default="bf16", help="fp16: as on a T4 (no bf16)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-breakdown", dest="breakdown", action="store_false", help="skip the traced step"
    )
    parser.add_argument("--model-dir", type=Path, help="keep models here (reused when present)")
    default_out = RESULTS / f"gpu_training_{datetime.now(UTC):%Y-%m-%d}.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    args.families = [f for f in args.families.split(",") if f]
    args.recipes = [r for r in args.recipes.split(",") if r]
    if set(args.families) - set(FAMILIES) or set(args.recipes) - set(SETUPS):
        parser.error(f"families: {','.join(FAMILIES)}; recipes: {','.join(SETUPS)}")
    return args


def main() -> None:
    args = _parse_args()
    report: dict[str, Any] = {
        "env": versions(args.device),
        "settings": vars(args) | {"out": str(args.out), "model_dir": str(args.model_dir or "")},
        "results": [],
        "ratios": {},
    }
    with tempfile.TemporaryDirectory(prefix="packsight-bench-") as scratch:
        root = args.model_dir or Path(scratch)
        for family in args.families:
            model_dir = root / f"{family}-{args.size}"
            if not (model_dir / "config.json").exists():
                build_random_model(model_dir, family=family, size=args.size)
            for recipe in args.recipes:
                record = run_recipe(model_dir, recipe, args) | {
                    "family": family,
                    "model": REAL_NAMES[family] if args.size == "real" else "tiny",
                }
                report["results"].append(record)
                gc.collect()  # the recipe's model went out of scope: give its memory back
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(
                    f"{family} {recipe}: peak {_gb(record['peak_allocated_gb'])} GB allocated, "
                    f"{_gb(record['peak_reserved_gb'])} GB reserved, "
                    f"{record['step_s']:.3f} s/step, loss {record['losses'][-1]:.3f}",
                    flush=True,
                )
                report["ratios"][family] = _ratios(
                    [r for r in report["results"] if r["family"] == family]
                )
                # Written after every recipe, so a run cut short still leaves its numbers.
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
