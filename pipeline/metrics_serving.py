"""Serving the metrics of pipeline/metrics.py: an HTTP server in each worker and in beat, the
exposition the API answers GET /metrics with, and prometheus_client's multiprocess mode for a
worker whose pool forks.

In multiprocess mode every process of a worker writes its values to files in a directory of its
own (PROMETHEUS_MULTIPROC_DIR); the server adds them up. prometheus_client reads that variable
when a metric is made, so `prepare_multiprocess_dir` runs before pipeline/metrics.py is imported
(the worker calls it before it imports its task modules, which is before its pool forks).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The pid of the process that made the directory, so a pool child started afresh (not forked)
# keeps its parent's directory instead of making one of its own.
OWNER_ENV = "PACKSIGHT_METRICS_DIR_OWNER"
DIR_PREFIX = "packsight-metrics-"


def prepare_multiprocess_dir(base: Path | None = None) -> Path:
    """Give this process group a fresh, empty directory for its metric files and point
    PROMETHEUS_MULTIPROC_DIR at it (children inherit it). Directories of processes that are gone
    (killed before they could remove theirs) are removed."""
    current = os.environ.get(MULTIPROC_ENV)
    if current and os.environ.get(OWNER_ENV) == str(os.getppid()):
        return Path(current)  # a pool child of the process that made it
    base = base or Path(tempfile.gettempdir())
    for old in base.glob(f"{DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    made = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=base))
    os.environ[MULTIPROC_ENV], os.environ[OWNER_ENV] = str(made), str(os.getpid())
    atexit.register(remove_multiprocess_dir)
    if "prometheus_client.values" in sys.modules:
        # Imported already (the `celery` command loads Flower's plugin, which imports it, and
        # `packsight` imports pipeline/metrics.py), so it chose its mode without the variable:
        # it chooses again, for the values made from now on. Every metric of packsight has
        # labels, so all of its values are made later, at first use.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()
    return made


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_multiprocess_dir() -> None:
    """When the process that made the directory exits, its metric files go with it (its pool
    children inherit this exit hook, but not the directory)."""
    current = os.environ.get(MULTIPROC_ENV)
    if current and os.environ.get(OWNER_ENV) == str(os.getpid()):
        shutil.rmtree(current, ignore_errors=True)


def process_exited(pid: int) -> None:
    """A pool process ends: its live gauges stop counting (its counters stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)


def process_collector() -> Collector:
    """This process's metrics: in multiprocess mode those of every process of its group."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def serve(port: int, host: str, *, what: str) -> bool:
    """Start the metrics HTTP server of a worker or beat (in a thread). A port already taken
    is logged and the process goes on without one; port 0 serves nothing."""
    if not port:
        return False
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=process_collector())
    except OSError as exc:
        log.warning(
            "metrics: %s cannot serve on %s:%d (%s); it runs on without metrics. Give each "
            "worker and beat of a host its own PACKSIGHT_METRICS_PORT",
            what,
            host,
            port,
            exc.strerror or exc,
        )
        return False
    where = os.environ.get(MULTIPROC_ENV)
    log.info(
        "metrics: %s serves http://%s:%d/metrics%s",
        what,
        host,
        port,
        f" (multiprocess, {where})" if where else "",
    )
    return True


class _Together:
    """Several collectors as one (generate_latest reads anything with collect())."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


_state_collectors: dict[str, Collector] = {}


def exposition(database_url: str) -> tuple[bytes, str]:
    """The API's GET /metrics: the counts by state from the database, and this process's own
    metrics (the work it ran itself on the embedded default); body and content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from packsight.pipeline.metrics import StateCollector

    if database_url not in _state_collectors:
        _state_collectors[database_url] = StateCollector(database_url)
    together = _Together(_state_collectors[database_url], process_collector())
    return generate_latest(together), CONTENT_TYPE_LATEST
