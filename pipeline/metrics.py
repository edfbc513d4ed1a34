"""packsight's Prometheus metrics, all defined here, and the calls the pipeline records them with.

Counters, histograms and gauges are kept by the process that records them; a worker whose pool
forks keeps them in per-process files that its metrics server adds up (metrics_serving.py sets
that up before any value is made: every metric here has labels, so its values are made at first
use). Counts by state are never kept here: `StateCollector` counts them in Postgres at every
scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.orm import Session

from packsight.models.counts import state_counts
from packsight.models.db import session_scope

log = logging.getLogger(__name__)

# From a label batch on a fast GPU to a long training run.
STAGE_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    4 * 3600,
    12 * 3600,
)

CLIPS_LABELLED = Counter(
    "packsight_clips_labelled",
    "Clip outcomes recorded by the label stage: ok (a prediction) or failed (the reason there "
    "is none)",
    ["outcome"],
)
STAGE_SECONDS = Histogram(
    "packsight_stage_duration_seconds",
    "One delivery of a work unit, from its claim to its outcome, by unit kind and how it ended "
    "(ok, failed: an attempt counted, outage: left for later, lease_lost: taken over)",
    ["kind", "outcome"],
    buckets=STAGE_BUCKETS,
)
OUTAGE_RETRIES = Counter(
    "packsight_outage_retries",
    "Waits before retrying an operation whose service was unavailable",
    ["service"],
)
OUTAGES_OUTLASTED = Counter(
    "packsight_outages_outlasted",
    "Operations given up because their service stayed unavailable for the whole retry window",
    ["service"],
)
UNITS_HANDED_BACK = Counter(
    "packsight_units_handed_back",
    "Work units handed back to be published again: outage (no attempt counted), error (the "
    "delivery raised), untouched (held by a delivery whose failure was in a batch without "
    "them; no attempt counted), worker_lost (the sweeper took it from a silent worker)",
    ["kind", "reason"],
)
UNITS_GIVEN_UP = Counter(
    "packsight_units_given_up",
    "Work units whose attempts were spent: their video, clips or training run failed",
    ["kind"],
)
SWEEPS = Counter(
    "packsight_sweeps",
    "Sweeper passes: ok, or cut short (broker_unavailable, database_unavailable, error)",
    ["outcome"],
)
SWEEP_RECOVERED = Counter(
    "packsight_sweep_recovered",
    "What sweeper passes recovered: taken_back (units of dead workers), republished (units the "
    "broker lost), recreated (open items that had no work)",
    ["what"],
)
# One GPU process per worker (--pool solo): the live process's latest value. Every metric here
# has labels, so that its values are made at first use, never at import (a worker sets up its
# multiprocess directory after the `packsight` command imported this module).
GPU_MEMORY_ALLOCATED = Gauge(
    "packsight_gpu_memory_allocated_bytes",
    "GPU memory held by tensors after the last GPU batch (torch.cuda.memory_allocated)",
    ["device"],
    multiprocess_mode="livemostrecent",
)
GPU_MEMORY_RESERVED = Gauge(
    "packsight_gpu_memory_reserved_bytes",
    "GPU memory reserved by the caching allocator after the last GPU batch",
    ["device"],
    multiprocess_mode="livemostrecent",
)
GPU_BATCH_SIZE = Gauge(
    "packsight_gpu_batch_size",
    "Clips in the last GPU batch",
    ["device"],
    multiprocess_mode="livemostrecent",
)
TRAINING_STEP = Gauge(
    "packsight_training_step",
    "Optimizer steps done by the latest training run of this worker",
    ["queue"],
    multiprocess_mode="livemostrecent",
)
TRAINING_TOTAL_STEPS = Gauge(
    "packsight_training_total_steps",
    "Optimizer steps the latest training run of this worker takes in all",
    ["queue"],
    multiprocess_mode="livemostrecent",
)
TRAINING_LOSS = Gauge(
    "packsight_training_loss",
    "Loss of the last optimizer step of the latest training run of this worker",
    ["queue"],
    multiprocess_mode="livemostrecent",
)


def after_commit(session: Session, record: Callable[[], None]) -> None:
    """Record a metric once `session` commits: a transaction retried after an outage, or rolled
    back, counts nothing twice or in vain."""
    event.listen(session, "after_commit", lambda _: record(), once=True)


def clips_recorded(session: Session, outcomes: list[bool]) -> None:
    """Clip outcomes (True: labelled) written in `session`'s transaction."""
    ok = sum(outcomes)

    def record() -> None:
        CLIPS_LABELLED.labels("ok").inc(ok)
        CLIPS_LABELLED.labels("failed").inc(len(outcomes) - ok)

    after_commit(session, record)


def delivered(kind: str, outcome: str, seconds: float) -> None:
    STAGE_SECONDS.labels(kind, outcome).observe(seconds)


def handed_back(kind: str, reason: str) -> None:
    UNITS_HANDED_BACK.labels(kind, reason).inc()


def swept(outcome: str, *, taken_back: int, republished: int, recreated: int) -> None:
    SWEEPS.labels(outcome).inc()
    for what, count in (
        ("taken_back", taken_back),
        ("republished", republished),
        ("recreated", recreated),
    ):
        SWEEP_RECOVERED.labels(what).inc(count)


def gpu_batch_done(size: int) -> None:
    """After a GPU batch of `size` clips (the labeler calls it); "cpu" without CUDA."""
    import torch  # loaded already: the labeler that ran the batch needs it

    if not torch.cuda.is_available():
        GPU_BATCH_SIZE.labels("cpu").set(size)
        return
    index = torch.cuda.current_device()
    device = str(index)
    GPU_BATCH_SIZE.labels(device).set(size)
    GPU_MEMORY_ALLOCATED.labels(device).set(torch.cuda.memory_allocated(index))
    GPU_MEMORY_RESERVED.labels(device).set(torch.cuda.memory_reserved(index))


def training_progress(
    queue: str, *, step: int | None = None, total: int | None = None, loss: float | None = None
) -> None:
    """A training run's progress, from the worker of training queue `queue`."""
    for gauge, value in (
        (TRAINING_STEP, step),
        (TRAINING_TOTAL_STEPS, total),
        (TRAINING_LOSS, loss),
    ):
        if value is not None:
            gauge.labels(queue).set(value)


class StateCollector(Collector):
    """Jobs, items, clips, work units and training runs by state, counted in the database at
    every scrape (the API serves them). A database that cannot answer gives
    packsight_database_up 0 and no counts, never an error page."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with session_scope(self.database_url) as session:
                counts = state_counts(session)
        except Exception as exc:  # the URL may hold a password: the type only
            log.warning("metrics: state counts unavailable: %s", type(exc).__name__)
            yield GaugeMetricFamily("packsight_database_up", _UP_HELP, value=0)
            return
        yield GaugeMetricFamily("packsight_database_up", _UP_HELP, value=1)
        for name, help_text, label, values in (
            ("packsight_jobs", "Jobs by state", "state", counts.jobs),
            ("packsight_job_items", "Job items (one video of a job each) by state", "state",
             counts.items),
            ("packsight_clips", "Clips by state: labelled and failed (one outcome per clip and "
             "model version), pending (clips of open jobs without one)", "state", counts.clips),
            ("packsight_training_runs", "Training runs by state", "state", counts.training_runs),
        ):  # fmt: skip
            family = GaugeMetricFamily(name, help_text + " (counted in Postgres)", labels=[label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            yield family
        units = GaugeMetricFamily(
            "packsight_work_units",
            "Work units still to be done, by kind and state (counted in Postgres)",
            labels=["kind", "state"],
        )
        for (kind, state), count in sorted(counts.units.items()):
            units.add_metric([kind, state], count)
        yield units


_UP_HELP = "1 when this scrape could count the states in the database, else 0"
