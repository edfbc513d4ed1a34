"""Chaos: faults of every moving part while a 20-video job runs, on a stack of its own (private
Postgres, Redis and S3 that can be stopped, Celery workers, beat's sweeper, the API). Whatever
happens, the job ends with every video labelled, one prediction row per clip, counts equal to
rows and no work left behind — infrastructure faults are waited out, never recorded as the
videos' failures. Recovery must come from the sweeper: Redis would only redeliver a lost task
after its one-hour visibility timeout.

Each test prints its recovery time (fault end -> job final); the bound asserted is generous and
scales with a fault-free job measured first on the same machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from chaos_stack import ChaosStack
from harness import RedisServer, budget
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.tables.clips import Clip, Prediction
from packsight.models.tables.jobs import Job, JobItem
from packsight.models.tables.work import UnitKind, UnitState, WorkUnit
from packsight.pipeline.context import Context
from packsight.pipeline.submission import JobRequest, submit_job

pytestmark = pytest.mark.e2e
VIDEOS = 20
RECORD: dict[str, float] = {}


def submit(chaos: ChaosStack, name: str, **headers: str) -> httpx.Response:
    with chaos.client() as api:
        body = {"bucket": f"chaos-{name}", "prefix": "videos/"}
        return api.post("/v1/jobs", json=body, headers=headers)


def units(chaos: ChaosStack, job_id: str, kind: str, state: str) -> int:
    with session_scope(chaos.database_url) as session:
        count = session.scalar(
            select(func.count()).where(
                WorkUnit.job_id == job_id, WorkUnit.kind == kind, WorkUnit.state == state
            )
        )
    assert count is not None  # COUNT(*) always has its row
    return count


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = budget(300)) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s:.0f} s"
        time.sleep(0.05)


def finished(chaos: ChaosStack, job_id: str) -> dict:
    """Poll the job until final (through the API, which may itself be recovering)."""
    body: dict = {}

    def final() -> bool:
        nonlocal body
        try:
            with chaos.client() as api:
                response = api.get(f"/v1/jobs/{job_id}")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        body = response.json()
        return body["state"] in ("succeeded", "failed", "partially_failed")

    wait_until(final, f"final (job {job_id})", timeout_s=chaos.deadline_s)
    return body


def assert_whole(chaos: ChaosStack, job: dict) -> None:
    """Every video labelled, one prediction per clip, the API's counts equal to the rows, and
    nothing left to do."""
    assert job["state"] == "succeeded", job
    assert job["items"]["succeeded"] == VIDEOS and sum(job["items"].values()) == VIDEOS
    with session_scope(chaos.database_url) as session:
        row = session.get(Job, job["id"])
        assert row is not None
        videos = select(JobItem.video_id).where(JobItem.job_id == row.id)
        clips = session.scalar(select(func.count(Clip.id)).where(Clip.video_id.in_(videos)))
        per_clip = session.execute(
            select(Prediction.clip_id, func.count())
            .join(Clip, Clip.id == Prediction.clip_id)
            .where(Clip.video_id.in_(videos), Prediction.model_version_id == row.model_version_id)
            .group_by(Prediction.clip_id)
        ).all()
        left = session.scalar(select(func.count()).where(WorkUnit.job_id == row.id))
    assert clips is not None  # COUNT(*) always has its row
    assert clips > 0 and len(per_clip) == clips
    assert all(count == 1 for _, count in per_clip)
    assert job["clips"] == {"total": clips, "labelled": clips, "failed": 0, "pending": 0}
    assert left == 0


def recovered(chaos: ChaosStack, name: str, job_id: str, fault_ended: float) -> None:
    job = finished(chaos, job_id)
    RECORD[name] = round(time.monotonic() - fault_ended, 1)
    print(f"\n{name}: job final {RECORD[name]} s after the fault ended")
    assert_whole(chaos, job)


@pytest.fixture(scope="module", autouse=True)
def baseline(chaos: ChaosStack) -> Iterator[None]:
    """A fault-free job first: it proves the stack and measures this machine's pace."""
    started = time.monotonic()
    response = submit(chaos, "baseline")
    assert response.status_code == 202, response.text
    assert_whole(chaos, finished(chaos, response.json()["job_id"]))
    chaos.pace(time.monotonic() - started)
    yield
    print(f"\nchaos recovery times (s): {RECORD}")


def test_cpu_worker_main_process_killed(chaos: ChaosStack) -> None:
    job_id = submit(chaos, "kill-cpu").json()["job_id"]
    wait_until(lambda: units(chaos, job_id, UnitKind.SAMPLE, UnitState.RUNNING), "decoding")
    chaos.processes["worker-cpu"].kill_leader()  # kill -9 of the prefork main process
    chaos.processes["worker-cpu"].kill()  # its pool children go down with the machine
    chaos.processes["worker-cpu"].restart()
    recovered(chaos, "kill -9 CPU worker", job_id, time.monotonic())


def test_gpu_worker_killed(chaos: ChaosStack) -> None:
    job_id = submit(chaos, "kill-gpu").json()["job_id"]
    wait_until(lambda: units(chaos, job_id, UnitKind.LABEL, UnitState.RUNNING), "labelling")
    chaos.processes["worker-gpu"].kill()
    chaos.processes["worker-gpu"].restart()
    recovered(chaos, "kill -9 GPU worker", job_id, time.monotonic())


def test_redis_restarted_without_persistence(chaos: ChaosStack) -> None:
    job_id = submit(chaos, "redis-restart").json()["job_id"]
    wait_until(
        lambda: units(chaos, job_id, UnitKind.SAMPLE, UnitState.DISPATCHED) >= 3,
        "messages waiting in Redis",
    )
    assert isinstance(chaos.redis, RedisServer)  # a private one (redis-server installed)
    chaos.redis.restart()  # every queued and unacknowledged message is gone
    recovered(chaos, "Redis restart, no persistence", job_id, time.monotonic())


# Each outage outlasts STALE_AFTER_S (10 s): heartbeats lapse and the sweeper sees stale work
# the moment it can read the database again.
def test_postgres_stopped_for_15_seconds(chaos: ChaosStack) -> None:
    job_id = submit(chaos, "postgres-down").json()["job_id"]
    wait_until(lambda: units(chaos, job_id, UnitKind.LABEL, UnitState.PENDING) + units(
        chaos, job_id, UnitKind.LABEL, UnitState.RUNNING) + units(
        chaos, job_id, UnitKind.LABEL, UnitState.DISPATCHED), "labelling work")  # fmt: skip
    chaos.postgres.pause()
    with chaos.client() as api:  # the API says "unavailable", not 500
        assert api.get(f"/v1/jobs/{job_id}").status_code == 503
    time.sleep(15)
    chaos.postgres.resume()
    recovered(chaos, "Postgres down 15 s", job_id, time.monotonic())


def test_s3_stopped_for_20_seconds(chaos: ChaosStack) -> None:
    job_id = submit(chaos, "s3-down").json()["job_id"]
    wait_until(lambda: units(chaos, job_id, UnitKind.SAMPLE, UnitState.RUNNING), "decoding")
    chaos.s3.pause()
    time.sleep(20)
    chaos.s3.resume()
    recovered(chaos, "S3 down 20 s", job_id, time.monotonic())


def test_api_killed_right_after_a_post(chaos: ChaosStack) -> None:
    response = submit(chaos, "kill-api", **{"Idempotency-Key": "kill-api-1"})
    chaos.processes["api"].kill()
    assert response.status_code == 202, response.text
    chaos.processes["api"].restart()
    chaos.wait_for_api()
    # The client lost nothing: a retry with its key finds the same job.
    again = submit(chaos, "kill-api", **{"Idempotency-Key": "kill-api-1"})
    assert again.status_code == 200 and again.json()["job_id"] == response.json()["job_id"]
    recovered(chaos, "API killed after POST", response.json()["job_id"], time.monotonic())


def test_a_job_committed_but_never_published_is_run(chaos: ChaosStack) -> None:
    """The API process dying between its commit and its publish leaves exactly this: the job
    and its work in Postgres, nothing in the broker."""
    ctx = Context(chaos.settings())  # no publisher: records, publishes nothing
    submission = submit_job(ctx, JobRequest("chaos-never-published", prefix="videos/"))
    recovered(chaos, "API died between commit and publish", submission.job_id, time.monotonic())


def test_broker_down_at_post(chaos: ChaosStack) -> None:
    with session_scope(chaos.database_url) as session:
        jobs_before = session.scalar(select(func.count(Job.id)))
    assert isinstance(chaos.redis, RedisServer)  # a private one (redis-server installed)
    chaos.redis.pause()
    try:
        response = submit(chaos, "broker-down", **{"Idempotency-Key": "broker-down-1"})
        assert response.status_code == 503, response.text
        assert "broker" in response.json()["detail"]
        with session_scope(chaos.database_url) as session:
            assert session.scalar(select(func.count(Job.id))) == jobs_before  # nothing recorded
    finally:
        chaos.redis.resume()
    retry = submit(chaos, "broker-down", **{"Idempotency-Key": "broker-down-1"})
    assert retry.status_code == 202, retry.text
    recovered(chaos, "broker down at POST", retry.json()["job_id"], time.monotonic())


def test_a_worker_with_another_visibility_timeout_refuses_to_start(
    chaos: ChaosStack, tmp_path: Path
) -> None:
    odd = chaos.worker("cpu", tmp_path / "odd.log", PACKSIGHT_VISIBILITY_TIMEOUT_S="600")
    try:
        wait_until(lambda: odd.process.poll() is not None, "exited", timeout_s=budget(120))
    finally:
        odd.stop()
    assert odd.process.returncode != 0
    assert "PACKSIGHT_VISIBILITY_TIMEOUT_S is 600 here but 3600" in odd.log_tail(50)
