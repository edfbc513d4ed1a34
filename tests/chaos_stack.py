"""A packsight stack that chaos tests may break: private Postgres, Redis and S3 servers that can
be paused and restarted, Celery workers for the cpu and gpu queues, `packsight beat` (the
sweeper) and the API, each a process group that can be killed and started again."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from app_fixtures import api_server, beat, cpu_worker, gpu_worker, stack_env, wait_ready

from packsight.settings import Settings


class ChaosStack:
    def __init__(self, root: Path, model: Path) -> None:
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.postgres = harness.postgres_database(private=True)
        self.redis = harness.redis_server()
        self.s3 = harness.s3_server()
        self.database_url = self.postgres.url
        self.token = secrets.token_urlsafe(24)
        self.env = stack_env(
            postgres_url=self.database_url,
            redis_url=self.redis.url,
            s3=self.s3.endpoint,
            model=model,
            data_dir=root / "data",
        ) | {"PACKSIGHT_API_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        self.port = harness.free_port()
        self.processes: dict[str, harness.ProcessGroup] = {}
        # Until a fault-free job has been timed: generous for any machine.
        self.deadline_s = harness.budget(600.0)

    def start(self) -> None:
        from packsight.models.migrate import upgrade_database

        upgrade_database(self.database_url)
        for process in (
            cpu_worker(self.env, self.logs / "worker-cpu.log"),
            gpu_worker(self.env, self.logs / "worker-gpu.log"),
            beat(self.env, self.logs / "beat.log"),
            api_server(self.env, self.logs / "api.log", self.port),
        ):
            self.processes[process.name] = process
        for process in self.processes.values():
            wait_ready(process)

    def worker(self, queue: str, log: Path, **env: str) -> harness.ProcessGroup:
        """Another worker for `queue`, with `env` overriding the stack's settings."""
        make = cpu_worker if queue == "cpu" else gpu_worker
        return make(self.env | env, log)

    def wait_for_api(self) -> None:
        wait_ready(self.processes["api"])

    def pace(self, fault_free_job_s: float) -> None:
        """Recovery must fit the stale period, the sweep, one redo of the job, and the fault's
        own aftermath; a slower machine gets proportionally longer."""
        self.deadline_s = harness.budget(120.0) + 3 * fault_free_job_s

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"http://127.0.0.1:{self.port}"
        return httpx.Client(base_url=url, headers=headers, timeout=harness.budget(30))

    def settings(self) -> Settings:
        names = {key.removeprefix("PACKSIGHT_").lower(): value for key, value in self.env.items()}
        # Strings, as in the environment: pydantic parses each into its field's type.
        fields: dict[str, Any] = {k: v for k, v in names.items() if k in Settings.model_fields}
        return Settings(**fields)

    def stop(self) -> None:
        harness.stop_all(list(self.processes.values()))
        for service in (self.s3, self.redis, self.postgres):
            service.stop()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[ChaosStack]:
    from packsight.video.synth import write_synthetic_archive

    stack = ChaosStack(tmp_path_factory.mktemp("chaos"), tiny_model_dir)
    try:
        stack.start()
        archive = write_synthetic_archive(
            tmp_path_factory.mktemp("chaos-archive"),
            videos=20,
            seed=11,
            min_seconds=5.2,
            max_seconds=7.5,
        )
        client = stack.s3.endpoint.client()
        # One copy of the archive per test, in a bucket of its own: each job labels videos
        # nobody labelled yet (one bucket would refuse a second key for the same clip ids).
        names = ("baseline", "kill-cpu", "kill-gpu", "redis-restart", "postgres-down",
                 "s3-down", "kill-api", "never-published", "broker-down")  # fmt: skip
        for name in names:
            client.create_bucket(Bucket=f"chaos-{name}")
            for video in archive:
                key = f"videos/{Path(video.key).name}"
                client.upload_file(str(video.path), f"chaos-{name}", key)
        started = time.monotonic()
        yield stack
        print(f"\nchaos stack ran {time.monotonic() - started:.0f} s; logs in {stack.logs}")
    finally:
        stack.stop()
