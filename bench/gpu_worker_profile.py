"""py-spy profiles of the end-to-end bench's GPU worker during a job, one per phase: while the
CPU workers sample, and after the last sample unit is done (the phases `where` splits). Each is
kept as py-spy's collapsed stacks (`--format raw`: "thread (tid): name;frame;... count") with a
summary per thread: the cores it kept busy on average over the phase (py-spy counts a thread
that waits for the GIL or for I/O as idle and leaves it out), and where those samples were.
Mode "gil" samples only the thread holding the GIL ("cores" is then its share of the GIL's
time), "idle" every thread all the time (where the idle ones wait)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

RATE = 100  # samples a second


class PhaseProfiles:
    """py-spy attached to one process, a recording per phase (`switch`), no pauses of it."""

    def __init__(self, py_spy: str, pid: int, logs: Path, mode: str = "active") -> None:
        self.py_spy, self.pid, self.folder = py_spy, pid, logs / "py-spy"
        self.flags = {"active": [], "gil": ["--gil"], "idle": ["--idle"]}[mode]
        self.running: tuple[str, subprocess.Popen[bytes], float] | None = None
        self.summaries: dict[str, Any] = {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def switch(self, phase: str | None) -> None:
        """End the running phase's recording and summarise it; start `phase`'s (None: none)."""
        if self.running is not None:
            name, process, started = self.running
            process.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            process.wait()
            seconds = time.monotonic() - started
            self.summaries[name] = summarise(self.folder / f"{name}.txt", seconds)
            self.running = None
        if phase is not None:
            command = [self.py_spy, "record", "--pid", str(self.pid), "--rate", str(RATE)]
            command += ["--format", "raw", "--threads", "--nonblocking", *self.flags]
            command += ["-o", str(self.folder / f"{phase}.txt")]
            log = (self.folder / f"{phase}.log").open("wb")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            self.running = (phase, process, time.monotonic())


def summarise(path: Path, seconds: float, top: int = 12) -> dict[str, Any]:
    """Per thread role (ROLES; else its name, pool numbers dropped, so a pool's threads are one):
    how many threads, the cores they kept busy on average, the functions they were in (leaf)
    and, for the main thread, under (inclusive)."""
    if not path.exists():
        return {"error": f"{path.name} was not written (see {path.stem}.log)"}
    samples: Counter[str] = Counter()
    leaves: defaultdict[str, Counter[str]] = defaultdict(Counter)
    under: Counter[str] = Counter()
    threads: defaultdict[str, set[str]] = defaultdict(set)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        head, _, frames = stack.partition(": ")
        name, *calls = frames.split(";")
        group = _role(name, calls)
        threads[group].add(head)
        samples[group] += int(count)
        if calls:
            leaves[group][_function(calls[-1])] += int(count)
        if group == "MainThread":
            for function in {_function(call) for call in calls}:
                under[function] += int(count)
    expected = max(seconds * RATE, 1.0)
    return {
        "seconds": seconds,
        "threads": {
            group: {
                "count": len(threads[group]),
                "cores": samples[group] / expected,
                "top": [(f, n / samples[group]) for f, n in leaves[group].most_common(top)],
            }
            for group, _ in samples.most_common()
        },
        "main_inclusive": [
            (f, n / max(samples["MainThread"], 1)) for f, n in under.most_common(2 * top)
        ],
    }


# What a thread is doing, by the code on its stack: py-spy keeps a thread's name by its id,
# which short-lived pool threads hand on to the next.
ROLES = (
    ("clip_loader.<locals>.load", "load"),  # the labeler's loader pool: fetch and unpack
    ("Labeler.stream.<locals>.prepare", "prepare"),  # its helper: the next batch's inputs
    ("_Delivery._record", "record"),
    ("Lease._beat", "lease"),
)


def _role(name: str, calls: list[str]) -> str:
    if name == "MainThread":
        return name
    for marker, role in ROLES:
        if any(call.startswith(marker + " ") for call in calls):
            return role
    return re.sub(r"[_-]\d+", "", name)


def _function(frame: str) -> str:
    """`name (path/file.py:123)` without the line: one entry per function."""
    return re.sub(r":\d+\)$", ")", frame)
