"""Fixtures that run packsight itself against the real services: a tiny local model, the
database schema, Celery worker processes for the cpu, gpu and training queues, and the API
under uvicorn."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import harness
import httpx
import pytest
from harness import S3Endpoint, budget

if TYPE_CHECKING:
    from packsight.settings import Settings

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from packsight.vlm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2vl")


@dataclass(frozen=True)
class Stack:
    """A running packsight: its environment, API address and token."""

    env: dict[str, str]
    api_url: str
    token: str
    logs: Path
    # By name; a fault-injection test may restart() one in place or replace it (teardown stops
    # whatever is here then).
    processes: dict[str, harness.ProcessGroup]
    # The loopback port each worker and beat serves its Prometheus metrics on, by name.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=budget(30))


def stack_env(
    *, postgres_url: str, redis_url: str, s3: S3Endpoint, model: Path, data_dir: Path
) -> dict[str, str]:
    return {
        "PACKSIGHT_DATABASE_URL": postgres_url,
        "PACKSIGHT_BROKER_URL": redis_url,
        "PACKSIGHT_STORAGE": "s3",
        "PACKSIGHT_S3_ENDPOINT_URL": s3.endpoint_url,
        "PACKSIGHT_S3_ACCESS_KEY": s3.access_key,
        "PACKSIGHT_S3_SECRET_KEY": s3.secret_key,
        "PACKSIGHT_S3_REGION": s3.region,
        "PACKSIGHT_MODEL": str(model),
        "PACKSIGHT_QUANTIZATION": "nf4",
        "PACKSIGHT_DATA_DIR": str(data_dir),
        "PACKSIGHT_GPU_BATCH_SIZE": "4",
        # Small frames keep the tiny model's CPU training and labelling quick.
        "PACKSIGHT_FRAME_MAX_SIDE": "112",
        "PACKSIGHT_MAX_ATTEMPTS": "3",
        # Test-sized recovery: the sweeper looks every 2 s, a unit without a heartbeat for
        # 10 s (workers send one every 2.5 s) is taken back, outages are waited out for 5 min
        # and noticed within 2 s of their end.
        "PACKSIGHT_SWEEP_INTERVAL_S": "2",
        "PACKSIGHT_STALE_AFTER_S": "10",
        "PACKSIGHT_TRANSIENT_RETRY_S": "300",
        "PACKSIGHT_RETRY_BACKOFF_MAX_S": "2",
        # Far beyond any test: whatever a killed worker held comes back through the sweeper,
        # never through Redis redelivery.
        "PACKSIGHT_VISIBILITY_TIMEOUT_S": "3600",
        "PACKSIGHT_TRAINING_SCHEDULE": "",
        # No metrics servers unless a stack gives each process a port of its own (the default,
        # 9100, would be taken by the first of them).
        "PACKSIGHT_METRICS_PORT": "0",
        "PACKSIGHT_METRICS_HOST": harness.LOOPBACK,
    }


CELERY_APP = [str(VENV_BIN / "celery"), "-A", "packsight.workers.app"]
CELERY_WORKER = [*CELERY_APP, "worker", "-E", "-l", "INFO"]
CELERY_BEAT = [*CELERY_APP, "beat", "-l", "INFO"]


def train_worker(env: dict[str, str], log_path: Path) -> harness.ProcessGroup:
    argv = [*CELERY_WORKER, "-Q", "gpu.t4.train", "--pool", "solo", "-n", "train@%h"]
    return harness.ProcessGroup("worker-train", argv, log_path=log_path, env=env)


def cpu_worker(env: dict[str, str], log_path: Path) -> harness.ProcessGroup:
    argv = [*CELERY_WORKER, "-Q", "cpu", "--pool", "prefork", "-c", "2", "-n", "cpu@%h"]
    return harness.ProcessGroup("worker-cpu", argv, log_path=log_path, env=env)


def gpu_worker(env: dict[str, str], log_path: Path) -> harness.ProcessGroup:
    argv = [*CELERY_WORKER, "-Q", "gpu.t4", "--pool", "solo", "-n", "gpu@%h"]
    return harness.ProcessGroup("worker-gpu", argv, log_path=log_path, env=env)


def beat(env: dict[str, str], log_path: Path) -> harness.ProcessGroup:
    """`packsight beat`: the sweeper (and, with a schedule, the nightly run)."""
    return harness.ProcessGroup(
        "beat", [str(VENV_BIN / "packsight"), "beat"], log_path=log_path, env=env
    )


def api_server(env: dict[str, str], log_path: Path, port: int) -> harness.ProcessGroup:
    argv = [str(VENV_BIN / "packsight"), "api", "--port", str(port)]
    return harness.ProcessGroup("api", argv, log_path=log_path, env=env)


def wait_ready(process: harness.ProcessGroup) -> None:
    """Until a worker says "ready.", beat has started its sweeper, or the API answers."""
    if process.name == "api":
        # ProcessGroup starts Popen with a list of str (typeshed: any command form).
        port = cast("list[str]", process.process.args)[-1]
        url = f"http://127.0.0.1:{port}/healthz"
        process.wait_until(lambda: httpx.get(url, timeout=2).status_code < 500, what="API health")
        return
    marker = "sweeper: every" if process.name == "beat" else "ready."
    process.wait_until(lambda: marker in process.log_tail(200), what="ready", timeout_s=budget(90))


@pytest.fixture(scope="session")
def stack_database() -> Iterator[str]:
    """The stack's own database: its sweeper drives whatever work it finds there, so tests
    that run work in-process use another one."""
    with harness.postgres_database() as database:
        yield database.url


@pytest.fixture(scope="session")
def stack(
    stack_database: str,
    redis_url: str,
    s3: S3Endpoint,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    from packsight.models.migrate import upgrade_database

    upgrade_database(stack_database)
    logs = tmp_path_factory.mktemp("logs")
    token = secrets.token_urlsafe(24)
    env = stack_env(
        postgres_url=stack_database,
        redis_url=redis_url,
        s3=s3,
        model=tiny_model_dir,
        data_dir=tmp_path_factory.mktemp("data"),
    ) | {"PACKSIGHT_API_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    port = harness.free_port()
    metrics = {
        name: harness.free_port() for name in ("worker-cpu", "worker-gpu", "worker-train", "beat")
    }

    def own(name: str) -> dict[str, str]:
        return env | {"PACKSIGHT_METRICS_PORT": str(metrics[name])}

    processes = [
        cpu_worker(own("worker-cpu"), logs / "worker-cpu.log"),
        gpu_worker(own("worker-gpu"), logs / "worker-gpu.log"),
        train_worker(own("worker-train"), logs / "worker-train.log"),
        beat(own("beat"), logs / "beat.log"),
        api_server(env, logs / "api.log", port),
    ]
    try:
        for process in processes:
            wait_ready(process)
        url = f"http://127.0.0.1:{port}"
        by_name = {process.name: process for process in processes}
        yield Stack(
            env=env, api_url=url, token=token, logs=logs, processes=by_name, metrics_ports=metrics
        )
        processes = list(by_name.values())
    finally:
        harness.stop_all(processes)


@pytest.fixture
def stack_settings(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings of the running stack, for tests that read the database directly."""
    from packsight.settings import Settings, get_settings

    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def start_api(
    env: dict[str, str], log_path: Path, *, healthy: bool = True
) -> tuple[harness.ProcessGroup, str]:
    """`packsight api` on a free port with `env` (on top of this process's environment); waits
    until /healthz answers 200, or with healthy=False any answer (a service is meant to be
    down). The caller stops the process."""
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}"
    process = harness.ProcessGroup(
        f"api:{port}",
        [str(VENV_BIN / "packsight"), "api", "--port", str(port)],
        log_path=log_path,
        env={"PYTHONUNBUFFERED": "1", **env},
    )
    wanted = (200,) if healthy else (200, 503)
    try:
        process.wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=10).status_code in wanted,
            what="API health",
        )
    except BaseException:
        process.stop()
        raise
    return process, url


def pytest_report_header() -> str:
    return f"packsight tests; python {sys.version.split()[0]}; cwd {os.getcwd()}"
