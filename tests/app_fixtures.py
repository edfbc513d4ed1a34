"""Fixtures that run packsight itself against the real services: a tiny local model, the
database schema, Celery worker processes for the cpu, gpu and training queues, and the API
under uvicorn."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import services
from services import S3Endpoint

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
    # By name; a fault-injection test may replace one (teardown stops whatever is here then).
    processes: dict[str, services.ProcessGroup]

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)


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
        "PACKSIGHT_MAX_ATTEMPTS": "2",
        # Short, so a task left unacked by a killed worker comes back within a test's time.
        "PACKSIGHT_VISIBILITY_TIMEOUT_S": "120",
    }


CELERY_APP = [str(VENV_BIN / "celery"), "-A", "packsight.workers.app"]
CELERY_WORKER = [*CELERY_APP, "worker", "-E", "-l", "INFO"]
CELERY_BEAT = [*CELERY_APP, "beat", "-l", "INFO"]


def train_worker(env: dict[str, str], log_path: Path) -> services.ProcessGroup:
    argv = [*CELERY_WORKER, "-Q", "gpu.t4.train", "--pool", "solo", "-n", "train@%h"]
    return services.ProcessGroup("worker-train", argv, log_path=log_path, env=env)


@pytest.fixture(scope="session")
def stack(
    postgres_url: str,
    redis_url: str,
    s3: S3Endpoint,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    from packsight.models.migrate import upgrade_database

    upgrade_database(postgres_url)
    logs = tmp_path_factory.mktemp("logs")
    token = secrets.token_urlsafe(24)
    env = stack_env(
        postgres_url=postgres_url,
        redis_url=redis_url,
        s3=s3,
        model=tiny_model_dir,
        data_dir=tmp_path_factory.mktemp("data"),
    ) | {"PACKSIGHT_API_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    port = services.free_port()
    processes = [
        services.ProcessGroup(
            "worker-cpu",
            [*CELERY_WORKER, "-Q", "cpu", "--pool", "prefork", "-c", "2", "-n", "cpu@%h"],
            log_path=logs / "worker-cpu.log",
            env=env,
        ),
        services.ProcessGroup(
            "worker-gpu",
            [*CELERY_WORKER, "-Q", "gpu.t4", "--pool", "solo", "-n", "gpu@%h"],
            log_path=logs / "worker-gpu.log",
            env=env,
        ),
        train_worker(env, logs / "worker-train.log"),
        services.ProcessGroup(
            "api",
            [str(VENV_BIN / "packsight"), "api", "--port", str(port)],
            log_path=logs / "api.log",
            env=env,
        ),
    ]
    try:
        for process in processes[:3]:
            process.wait_until(
                lambda p=process: "ready." in p.log_tail(200), what="worker ready", timeout_s=90
            )
        url = f"http://127.0.0.1:{port}"
        processes[3].wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, what="API health"
        )
        by_name = {process.name: process for process in processes}
        yield Stack(env=env, api_url=url, token=token, logs=logs, processes=by_name)
        processes = list(by_name.values())
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def stack_settings(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Settings of the running stack, for tests that read the database directly."""
    from packsight.settings import Settings, get_settings

    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def start_api(
    env: dict[str, str], log_path: Path, *, healthy: bool = True
) -> tuple[services.ProcessGroup, str]:
    """`packsight api` on a free port with `env` (on top of this process's environment); waits
    until /healthz answers 200, or with healthy=False any answer (a service is meant to be
    down). The caller stops the process."""
    port = services.free_port()
    url = f"http://127.0.0.1:{port}"
    process = services.ProcessGroup(
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
