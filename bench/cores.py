"""The host's vCPUs grouped by physical core, and a split of them between the GPU worker and
the CPU workers by whole cores: two hyperthreads of one core share its execution units, so a
GPU worker given one thread of a core whose sibling runs a CPU worker still competes with it."""

from __future__ import annotations

import os
from pathlib import Path

TOPOLOGY = Path("/sys/devices/system/cpu")


def physical_cores(usable: set[int] | None = None) -> list[list[int]]:
    """The usable vCPUs, one list per physical core (in the kernel's numbering); a vCPU whose
    siblings the kernel does not say is a core of its own."""
    usable = usable if usable is not None else set(os.sched_getaffinity(0))
    groups: dict[tuple[int, ...], list[int]] = {}
    for cpu in sorted(usable):
        siblings = TOPOLOGY / f"cpu{cpu}/topology/thread_siblings_list"
        try:
            key = tuple(sorted(_cpu_list(siblings.read_text())))
        except OSError:
            key = (cpu,)
        groups.setdefault(key, []).append(cpu)
    return sorted(groups.values())


def split(gpu_cores: int) -> tuple[list[int], list[int]]:
    """(the GPU worker's vCPUs, the others'): the last `gpu_cores` physical cores, every
    hyperthread of them, for the GPU worker; none means both share every vCPU."""
    cores = physical_cores()
    if not gpu_cores:
        everything = [cpu for core in cores for cpu in core]
        return everything, everything
    if gpu_cores >= len(cores):
        raise SystemExit(f"--gpu-cores {gpu_cores}: this host has {len(cores)} physical cores")
    mine, theirs = cores[-gpu_cores:], cores[:-gpu_cores]
    return sorted(c for core in mine for c in core), sorted(c for core in theirs for c in core)


def _cpu_list(text: str) -> list[int]:
    """ "0-3,8,10-11" -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        cpus += range(int(low), int(high or low) + 1)
    return cpus
