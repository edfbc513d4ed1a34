"""Several GPU workers, one per GPU, on one queue: the same job (fresh copies of the same videos)
run with 1, then N GPU workers, each worker warmed by a job of its own first (the others stop
consuming meanwhile: Celery's cancel_consumer), on the services and workers of
`end_to_end.py`. Reports each run's clips/s, its ratio to the first count's, and the clip
outcomes each GPU worker recorded (its packsight_clips_labelled_total): their sum against the
job's clips says whether any clip was labelled twice.

    python3 bench/gpu_workers.py --gpu-workers 1,2 --video-sizes 640x360 --cpu-workers 14
    .venv/bin/python bench/gpu_workers.py --size tiny --device cpu --quantization none \\
        --gpu-workers 1,2 --videos 4 --unique-videos 2 --seconds 10 --video-sizes 160x120 \\
        --frame-side 112 --batch 4 --cpu-workers 1      # smoke run here (numbers mean nothing)

Writes docs/results/gpu_workers_<date>.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import end_to_end
from bench_workers import GPU_QUEUE, gpu_env, recorded, start_workers

from packsight.pipeline.context import Context

BUCKET = end_to_end.BUCKET


def warm(ctx: Context, nodes: list[str], video: bytes, run: int) -> list[dict[str, Any]]:
    """A one-video job per GPU worker, the others not consuming: each loads its model."""
    from packsight.workers.app import app

    jobs = []
    for i, node in enumerate(nodes):
        others = [n for n in nodes if n != node]
        if others:
            app.control.cancel_consumer(GPU_QUEUE, destination=others, reply=True)
        # A subject and session of its own: clip ids are made of them (OpenPack's layout).
        prefix, subject = f"warmup-{run}-{i}/", f"U{9000 + 10 * run + i}"
        ctx.storage.put_bytes(BUCKET, f"{prefix}{subject}/kinect/S9999.mp4", video)
        jobs.append(end_to_end.run_job(ctx, prefix))
        if others:
            app.control.add_consumer(GPU_QUEUE, destination=others, reply=True)
    return jobs


def one_count(
    ctx: Context, args: argparse.Namespace, env: dict[str, str], files: list[Path], run: int
) -> dict[str, Any]:
    count = args.gpu_workers[run]
    prefix = f"{count}-gpus-{run}/"
    end_to_end.upload_copies(ctx, files, prefix, args.videos, run)
    own = [gpu_env(i) for i in range(count)]
    logs = args.logs / prefix.strip("/")
    logs.mkdir(parents=True, exist_ok=True)
    workers = start_workers(env, logs, args.cpu_workers, 0, 0, own)
    nodes = [f"gpu{i}@{socket.gethostname()}" for i in range(count)]
    try:
        warmup = warm(ctx, nodes, files[0].read_bytes(), run)
        before = [recorded(e) for e in own]
        job = end_to_end.run_job(ctx, prefix)
        by_worker = [recorded(e) - b for e, b in zip(own, before, strict=True)]
    finally:
        for worker in reversed(workers):
            worker.stop()
    return {
        "gpu_workers": count,
        "job": job,
        "warmup": warmup,
        "recorded_by_worker": by_worker,
        "recorded_more_than_once": sum(by_worker) - job["clips"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-workers", default="1,2", help="GPU worker counts, in turn")
    for name, default in (("--family", "qwen2_vl"), ("--size", "real"), ("--device", "auto")):
        parser.add_argument(name, default=default)
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--model", type=Path, help="a local checkpoint (default: built, random)")
    parser.add_argument("--videos", type=int, default=96, help="videos per job")
    parser.add_argument("--unique-videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--video-sizes", default="640x360", help="one size: the job's videos")
    parser.add_argument("--cpu-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--decode-threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frame-side", type=int, default=336)
    parser.add_argument("--logs", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.gpu_workers = [int(n) for n in args.gpu_workers.split(",")]
    out = (
        args.out or end_to_end.ROOT / f"docs/results/gpu_workers_{datetime.now(UTC):%Y-%m-%d}.json"
    )
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    with end_to_end.services(args, "packsight-gpus-") as (root, ctx, env):
        args.logs = args.logs or root / "logs"
        width, height = (int(x) for x in args.video_sizes.split("x"))
        files = end_to_end.videos(
            root / "videos", args.unique_videos, args.seconds, (width, height)
        )
        for run in range(len(args.gpu_workers)):
            report["runs"].append(one_count(ctx, args, env, files, run))
            result = report["runs"][-1]
            base = report["runs"][0]["job"]["clips_per_s"]
            result["ratio_to_first"] = result["job"]["clips_per_s"] / base
            print(
                f"{result['gpu_workers']} GPU worker(s): {result['job']['clips_per_s']:.2f} "
                f"clips/s ({result['ratio_to_first']:.2f}x), recorded by worker "
                f"{result['recorded_by_worker']}, more than once: "
                f"{result['recorded_more_than_once']:.0f}",
                flush=True,
            )
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
