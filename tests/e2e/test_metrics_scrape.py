"""Prometheus metrics scraped from the running processes while a real job goes through the stack
(the prefork CPU worker, the solo GPU worker, beat and the API): the numbers move by exactly
what the job did, and the prefork pool's children are added up by the worker's server."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from app_fixtures import Stack
from harness import S3Endpoint, budget
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from packsight.video.synth import write_synthetic_archive

pytestmark = pytest.mark.e2e
BUCKET, PREFIX, VIDEOS = "metrics", "station-9/", 3
FINAL = ("succeeded", "failed", "partially_failed")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    return parse(httpx.get(url, timeout=budget(10)).raise_for_status().text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_follow_a_job_through_every_process(
    stack: Stack, s3: S3Endpoint, tmp_path: Path
) -> None:
    videos = write_synthetic_archive(
        tmp_path / "archive", videos=VIDEOS, seed=23, min_seconds=6, max_seconds=11
    )
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for video in videos:
        client.upload_file(str(video.path), BUCKET, PREFIX + Path(video.key).name)

    ports = stack.metrics_ports
    url = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
    url["api"] = f"{stack.api_url}/metrics"
    before = {name: scrape(address) for name, address in url.items()}

    with stack.client() as api:
        accepted = api.post("/v1/jobs", json={"bucket": BUCKET, "prefix": PREFIX})
        assert accepted.status_code == 202, accepted.text
        job_id, job = accepted.json()["job_id"], {}

        def final() -> bool:
            job.update(api.get(f"/v1/jobs/{job_id}").raise_for_status().json())
            return job["state"] in FINAL

        stack.processes["api"].wait_until(final, what="job final", timeout_s=budget(180))
    assert job["state"] == "succeeded", job
    clips = job["clips"]["labelled"]
    assert clips == job["clips"]["total"] > 0

    # The GPU worker counts clips after the commit that recorded them: a moment after the job
    # itself may read as succeeded.
    gpu, name = {}, "packsight_clips_labelled_total"

    def counted() -> bool:
        gpu.update(scrape(url["worker-gpu"]))
        return (
            value(gpu, name, outcome="ok") - value(before["worker-gpu"], name, outcome="ok")
            >= clips
        )

    stack.processes["worker-gpu"].wait_until(counted, what="clips counted", timeout_s=budget(30))
    assert value(gpu, name, outcome="ok") - value(before["worker-gpu"], name, outcome="ok") == clips
    assert value(gpu, name, outcome="failed") == value(before["worker-gpu"], name, outcome="failed")

    # Stage latency: every sample delivery on the CPU worker, the label deliveries on the GPU's
    # (one per video at most: a delivery labels the clips of other videos waiting beside it).
    count = "packsight_stage_duration_seconds_count"
    cpu = scrape(url["worker-cpu"])
    sampled = value(cpu, count, kind="sample", outcome="ok")
    assert sampled - value(before["worker-cpu"], count, kind="sample", outcome="ok") == VIDEOS
    labelled = value(gpu, count, kind="label", outcome="ok")
    assert 1 <= labelled - value(before["worker-gpu"], count, kind="label", outcome="ok") <= VIDEOS
    bucket = value(
        gpu, "packsight_stage_duration_seconds_bucket", kind="label", outcome="ok", le="+Inf"
    )
    assert bucket == labelled
    batch = [v for (metric, _), v in gpu.items() if metric == "packsight_gpu_batch_size"]
    assert len(batch) == 1 and 0 < batch[0] <= int(stack.env["PACKSIGHT_GPU_BATCH_SIZE"])

    # The prefork pool's children each keep their own file; the worker's server adds them up.
    leader = stack.processes["worker-cpu"].pid
    folders = list(Path(tempfile.gettempdir()).glob(f"packsight-metrics-{leader}-*"))
    assert len(folders) == 1, folders
    per_child = {}
    for path in folders[0].glob("histogram_*.db"):
        merged = parse_metrics(MultiProcessCollector.merge([str(path)]))
        per_child[path.name] = value(merged, count, kind="sample", outcome="ok")
    busy = {child: n for child, n in per_child.items() if n}
    assert len(busy) >= 2, f"one pool process ran every sample unit: {per_child}"
    assert sum(busy.values()) == sampled

    # The API counts states in Postgres at the scrape.
    states = scrape(url["api"])
    moved = {
        (metric, state): value(states, metric, state=state)
        - value(before["api"], metric, state=state)
        for metric, state in (
            ("packsight_jobs", "succeeded"),
            ("packsight_jobs", "running"),
            ("packsight_job_items", "succeeded"),
            ("packsight_clips", "labelled"),
            ("packsight_clips", "pending"),
        )
    }
    assert moved == {
        ("packsight_jobs", "succeeded"): 1,
        ("packsight_jobs", "running"): 0,
        ("packsight_job_items", "succeeded"): VIDEOS,
        ("packsight_clips", "labelled"): clips,
        ("packsight_clips", "pending"): 0,
    }
    assert value(states, "packsight_database_up") == 1
    body = httpx.get(url["api"], timeout=budget(10)).text  # no token needed, no secret in it
    for secret in (
        stack.token,
        stack.env["PACKSIGHT_S3_SECRET_KEY"],
        stack.env["PACKSIGHT_DATABASE_URL"],
    ):
        assert secret not in body

    # beat's sweeper passes (every 2 s here) show on its own port.
    sweeps = "packsight_sweeps_total"
    stack.processes["beat"].wait_until(
        lambda: (
            value(scrape(url["beat"]), sweeps, outcome="ok")
            > value(before["beat"], sweeps, outcome="ok")
        ),
        what="a sweep counted",
        timeout_s=budget(30),
    )


def parse_metrics(metrics: Iterable[Metric]) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for metric in metrics
        for sample in metric.samples
    }
