"""Time budgets for tests that wait: each budget is a figure that holds with room to spare on an
idle 2-core machine, multiplied by how much slower this machine runs a fixed piece of work
right now, so a slow or busy machine waits longer instead of failing.

PACKSIGHT_TEST_SLOWNESS=<factor> sets the multiplier instead of measuring it.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from functools import cache

# Best of 5 runs of `_fixed_work` on the idle 2-core reference machine.
REFERENCE_WORK_S = 0.25


def _fixed_work() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(1_500_000):  # interpreter-bound, like most of what the tests wait for
        total += i * i % 7
    zlib.compress(hashlib.sha256(b"packsight").digest() * (1 << 18), 6)  # native code
    return time.perf_counter() - started


@cache
def slowness() -> float:
    """How many times slower than the reference machine this one is (never below 1)."""
    given = os.environ.get("PACKSIGHT_TEST_SLOWNESS")
    if given:
        return max(1.0, float(given))
    return max(1.0, min(_fixed_work() for _ in range(5)) / REFERENCE_WORK_S)


def budget(seconds: float) -> float:
    """`seconds` (a budget for the reference machine) on this machine."""
    return seconds * slowness()
