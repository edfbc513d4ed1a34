"""Session-wide fixtures for real Postgres, Redis and S3 on loopback, each started on first use,
the `gpu` marker's skip rule, and per-test timeouts scaled to the machine's speed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import harness
import pytest
from harness import S3Endpoint

pytest_plugins = ["app_fixtures", "chaos_stack"]

if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Test sessions side by side (pytest-xdist) share the cores: each takes its share of
    # torch's threads (read when torch is imported, later), and so do the commands it starts.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user data folder (XDG_DATA_HOME/packsight) of each test is a folder of its own:
    commands it runs keep their state there, never in the home of whoever runs the tests."""
    home = tmp_path_factory.mktemp("data-home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home / "packsight"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL (postgresql+psycopg2) of a fresh database, dropped after the session."""
    with harness.postgres_database() as database:
        yield database.url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a private, empty Redis, stopped after the session."""
    with harness.redis_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Endpoint]:
    """A private S3 server (SeaweedFS) that requires `s3.access_key` / `s3.secret_key`."""
    with harness.s3_server() as server:
        yield server.endpoint


@cache
def _why_no_cuda() -> str | None:
    # torch takes seconds to import, so only sessions that collected a gpu test pay for it.
    try:
        import torch
    except ImportError:
        return "gpu test: torch is not installed"
    if not torch.cuda.is_available():
        return "gpu test: no CUDA device available"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The ini's per-test timeout (pytest-timeout) is a budget for the reference machine.
    timeout = config.getini("timeout")
    if timeout:
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(harness.budget(float(timeout))))
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and (reason := _why_no_cuda()):
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))
