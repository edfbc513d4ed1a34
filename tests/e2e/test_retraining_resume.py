"""Retraining on the running stack when the training machine is lost: the run goes on elsewhere,
from the checkpoint the lost worker stored in S3."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from app_fixtures import Stack, train_worker
from harness import S3Endpoint
from retraining_archive import BUCKET, wait_for

from packsight.settings import Settings
from packsight.video.synth import SyntheticVideo

pytestmark = pytest.mark.e2e


def test_a_lost_training_worker_is_resumed_elsewhere_from_the_stored_checkpoint(
    stack: Stack,
    stack_settings: Settings,
    s3: S3Endpoint,
    verified: list[SyntheticVideo],
    tmp_path: Path,
) -> None:
    client, steps = s3.client(), 30
    with stack.client() as api:
        response = api.post(
            "/v1/training-runs",
            json={"bucket": BUCKET, "config": {"max_steps": steps, "checkpoint_every": 3}},
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        latest = f"training-runs/{run_id}/checkpoints/latest.json"
        bucket = stack_settings.artifact_bucket

        def stored_step() -> int | None:
            try:
                body = client.get_object(Bucket=bucket, Key=latest)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
            return json.loads(body)["step"]

        deadline = time.monotonic() + 300
        while stored_step() is None:
            assert time.monotonic() < deadline, "no checkpoint reached object storage"
            time.sleep(0.2)
        # The machine is lost: the worker dies mid-run, its local disk with it.
        stack.processes["worker-train"].kill()
        lost_at = stored_step()
        assert lost_at is not None  # stored above; checkpoints stay until the run ends
        run = api.get(f"/v1/training-runs/{run_id}").raise_for_status().json()
        assert run["state"] == "running" and run["step"] < steps, run

        replacement = train_worker(
            stack.env | {"PACKSIGHT_DATA_DIR": str(tmp_path / "other-machine")},
            stack.logs / "worker-train-2.log",
        )
        stack.processes["worker-train"] = replacement  # stopped with the stack
        replacement.wait_until(lambda: "ready." in replacement.log_tail(200), what="ready")
        # Nobody sends anything: the sweeper sees the run's unit without a heartbeat and
        # publishes it again (Redis would only redeliver after its one-hour visibility timeout).
        run = wait_for(api, f"/v1/training-runs/{run_id}", ("succeeded", "failed"))
    assert run["state"] == "succeeded", run["error"]
    assert run["step"] == steps
    summary = json.loads(
        client.get_object(Bucket=bucket, Key=f"training-runs/{run_id}/adapter/training.json")[
            "Body"
        ].read()
    )
    # It went on from the checkpoint the lost machine stored, not from scratch.
    assert summary["resumed_from"] == lost_at > 0
    assert summary["steps"] == steps and len(summary["losses"]) == steps
