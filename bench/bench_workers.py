"""The worker processes of the end-to-end benches: one prefork CPU worker, `gpus` solo GPU
workers (with several, each on a GPU of its own and with its own metrics port) and beat's
sweeper, all consuming the real queues; and what each GPU worker says it recorded."""

from __future__ import annotations

import os
import sys
import urllib.request
from functools import partial
from pathlib import Path

import cores
import harness

GPU_QUEUE = "gpu.t4"


def start_workers(
    env: dict[str, str],
    logs: Path,
    cpu: int,
    cpu_nice: int,
    gpu_cores: int,
    own: list[dict[str, str]] | None = None,
) -> list[harness.ProcessGroup]:
    """[CPU worker, GPU workers..., beat], each ready: one GPU worker, or one per `own`
    environment (`gpu_env`), GPU worker i named `gpu<i>@host`."""
    # Modules rather than console scripts: the same on a host whose packages were installed
    # with `pip --target` (no scripts on PATH for this interpreter).
    celery = [sys.executable, "-m", "celery", "-A", "packsight.workers.app", "worker", "-l", "INFO"]
    full = dict(os.environ) | env
    mine, theirs = cores.split(gpu_cores)  # whole physical cores of its own for the GPU worker
    gpu_pin = ["taskset", "-c", ",".join(map(str, mine))]
    pin = ["taskset", "-c", ",".join(map(str, theirs)), "nice", "-n", str(cpu_nice)]
    own = own or [{}]
    gpus = len(own)
    workers = [
        harness.ProcessGroup(
            "worker-cpu",
            # `nice`: the CPU workers yield the cores to the GPU worker's host thread.
            [*pin, *celery, "-Q", "cpu", "-c", str(cpu), "-n", "cpu@%h"],
            log_path=logs / "worker-cpu.log",
            env=full,
        ),
        *(
            harness.ProcessGroup(
                "worker-gpu" if gpus == 1 else f"worker-gpu{i}",
                [*gpu_pin, *celery, "-Q", GPU_QUEUE, "--pool", "solo", "-n", f"gpu{i}@%h"],
                log_path=logs / ("worker-gpu.log" if gpus == 1 else f"worker-gpu{i}.log"),
                env=full | own[i],
            )
            for i in range(gpus)
        ),
        harness.ProcessGroup(
            "beat",
            [*pin, sys.executable, "-m", "packsight", "beat"],
            log_path=logs / "beat.log",
            env=full,
        ),
    ]
    for worker in workers:
        worker.wait_until(partial(_ready, worker), what="ready")
    return workers


def gpu_env(index: int) -> dict[str, str]:
    """A GPU worker's own GPU and metrics port."""
    return {"CUDA_VISIBLE_DEVICES": str(index), "PACKSIGHT_METRICS_PORT": str(harness.free_port())}


def recorded(env: dict[str, str]) -> float:
    """Clip outcomes the GPU worker of `env` (`gpu_env`) recorded so far: its
    packsight_clips_labelled_total."""
    url = f"http://127.0.0.1:{env['PACKSIGHT_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("packsight_clips_labelled_total{")
    )


def _ready(worker: harness.ProcessGroup) -> bool:
    return ("sweeper: every" if worker.name == "beat" else "ready.") in worker.log_tail(200)
