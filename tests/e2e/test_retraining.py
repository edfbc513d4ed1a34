"""Retraining on the running stack: annotations imported with the CLI, a run started through
the API and trained by the real `gpu.t4.train` worker, evaluated, stored in Postgres and S3;
then the serving adapter switches for new jobs without restarting the GPU worker, and rolls
back. Runs before test_retraining_resume.py and _schedule.py: nothing is promoted for the model
yet."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from app_fixtures import Stack
from celery import Celery
from harness import S3Endpoint
from retraining_archive import BUCKET, wait_for
from sqlalchemy import func, select

from packsight.labels.metrics import METRIC_NAMES, Evaluation, beats_baselines, is_better
from packsight.models.db import session_scope
from packsight.models.promotions import promote
from packsight.models.tables.clips import Prediction
from packsight.models.tables.jobs import Job
from packsight.models.tables.training_runs import TrainingRun
from packsight.models.tables.versions import ModelVersion
from packsight.settings import Settings
from packsight.video.synth import SyntheticVideo
from packsight.workers.app import SCHEDULED_TRAINING_TASK

pytestmark = pytest.mark.e2e
STEPS = 6


def as_evaluation(block: dict) -> Evaluation:
    return Evaluation(
        oca=block["OCA"],
        tiou_at_05=block["tIoU@0.5"],
        aa_at_1=block["AA@1"],
        count=block["clips"],
        missing=0,
        confusion={},
    )


def test_training_run_trains_evaluates_and_serves(
    stack: Stack, stack_settings: Settings, s3: S3Endpoint, verified: list[SyntheticVideo]
) -> None:
    videos, client = verified, s3.client()
    db = stack_settings.resolved_database_url

    with stack.client() as api:
        bad = api.post("/v1/training-runs", json={"config": {"learning_rate": 1}})
        assert bad.status_code == 422 and "learning_rate" in bad.text
        response = api.post(
            "/v1/training-runs",
            json={"bucket": BUCKET, "config": {"max_steps": STEPS, "checkpoint_every": 3}},
        )
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        # While it runs, neither a manual run nor the nightly schedule can start another.
        again = api.post("/v1/training-runs", json={"bucket": BUCKET})
        assert again.status_code == 409 and run_id in again.text
        beat = Celery(broker=stack.env["PACKSIGHT_BROKER_URL"])
        beat.send_task(SCHEDULED_TRAINING_TASK, queue="cpu")
        run = wait_for(api, f"/v1/training-runs/{run_id}", ("succeeded", "failed"))
        assert run["state"] == "succeeded", run["error"]
        assert run["trigger"] == "manual" and run["step"] == run["total_steps"] == STEPS
        # What it did last, kept in view: every video read, the last loss, every evaluation.
        done = run["progress"]
        assert done["videos_done"] == done["videos"] > 0 and done["loss"] > 0
        assert done["phase"] == "evaluating" and done["evaluation"] == done["evaluations"] >= 2
        assert done["clips_done"] == done["clips"] > 0
        dataset = run["dataset"]
        assert dataset["train_clips"] > 0 and dataset["skipped_videos"] == []
        test_ids = dataset["test_clip_ids"]
        assert test_ids and all(c.startswith("U0108_") for c in test_ids)
        assert test_ids == sorted(test_ids) and len(test_ids) <= 30

        results = run["results"]
        base = as_evaluation(results["base_model"])
        tuned = as_evaluation(results["finetuned_model"])
        assert base.count == tuned.count == len(test_ids)
        assert results["champion_model"] is None  # nothing promoted for this model before
        baselines = {n: as_evaluation(b) for n, b in results["baselines"].items()}
        assert set(baselines) == {"majority", "constant", "chance"}
        promoted = is_better(tuned, base)[0] and beats_baselines(tuned, baselines)[0]
        assert run["decision"] == ("promoted" if promoted else "rejected")
        assert results["promotion"]["promoted"] == promoted

        # results.json and the adapter are in the artifact bucket.
        prefix = f"training-runs/{run_id}"
        bucket = stack_settings.artifact_bucket
        stored = client.get_object(Bucket=bucket, Key=f"{prefix}/results.json")["Body"].read()
        assert json.loads(stored) == results
        lines = client.get_object(Bucket=bucket, Key=f"{prefix}/dataset.jsonl")["Body"].read()
        clips = [json.loads(line) for line in lines.decode().splitlines()]
        assert [c["clip_id"] for c in clips if c["split"] == "test"] == test_ids
        assert sum(c["split"] == "train" for c in clips) == dataset["train_clips"]
        assert all(len(c["frame_indices"]) == 8 for c in clips)
        keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
        assert f"{prefix}/adapter/adapter_config.json" in keys
        assert f"{prefix}/adapter/training.json" in keys  # its config and losses
        assert f"{prefix}/adapter/results.json" in keys  # its metrics
        # No checkpoint (stored at step 3: the resume test below uses one) outlives the run.
        assert not [k for k in keys if "/checkpoints/" in k]
        assert f"{prefix}/videos.json" in keys  # the data, frozen for a resumed delivery

        # Metrics and confusion cells per model version in Postgres, served by the API.
        models = {m["id"]: m for m in api.get("/v1/models").raise_for_status().json()}
        candidate = models[run["candidate_version_id"]]
        assert candidate["adapter_uri"] == f"artifact://{bucket}/{prefix}/adapter"
        for name in METRIC_NAMES:
            assert candidate["metrics"]["test"][name] == results["finetuned_model"][name]
        # U0107 is scored too, for the candidate only, and kept apart from the test split.
        validation = dict(candidate["metrics"]["validation"])
        assert validation.pop("baselines") == results["validation_baselines"]
        assert validation == results["validation"]
        assert candidate["metrics"]["test"]["baselines"] == {
            name: {k: v for k, v in block.items() if k != "model"}
            for name, block in results["baselines"].items()
        }
        assert candidate["settings"]["frames"]["max_side"] == 112  # what it was trained on
        assert results["validation"]["clips"] == dataset["validation_clips"] > 0
        confusion = (
            api.get(
                "/v1/stats/confusion", params={"model_version": candidate["id"], "split": "test"}
            )
            .raise_for_status()
            .json()
        )
        assert sum(map(sum, confusion["matrix"])) == len(test_ids)

        # The schedule's attempt was processed and refused, and created no run of its own.
        log = stack.logs / "worker-cpu.log"
        deadline = time.monotonic() + 60
        while f"nightly training skipped: training run {run_id}" not in log.read_text():
            assert time.monotonic() < deadline, "the scheduled task was not processed"
            time.sleep(0.5)
        with session_scope(db) as session:
            training_run = session.get(TrainingRun, run_id)
            assert training_run is not None
            started = training_run.created_at
            later = select(func.count(TrainingRun.id)).where(TrainingRun.created_at > started)
            assert session.scalar(later) == 0

        # Serving: make the candidate the champion (it is already if it won), then a new job
        # labels with it on the same, never restarted GPU worker, which fetches the adapter from S3.
        with session_scope(db) as session:
            if not promoted:
                base_version = session.scalar(
                    select(ModelVersion).where(
                        ModelVersion.base_model == candidate["base_model"],
                        ModelVersion.adapter_uri.is_(None),
                    )
                )
                promote(session, candidate["id"], reason="e2e", previous=base_version)
        first_key = videos[0].key
        job = label(api, first_key)
        assert job["state"] == "succeeded"
        assert job_version(db, job["id"]) == candidate["id"]
        assert predictions_of(db, job["id"]) > 0

        restored = api.post(f"/v1/models/{candidate['id']}/rollback")
        assert restored.status_code == 200, restored.text
        base_id = restored.json()["id"]
        assert restored.json()["adapter_uri"] is None and restored.json()["is_serving"]
        job = label(api, first_key)
        assert job["state"] == "succeeded" and job_version(db, job["id"]) == base_id
        # The candidate no longer serves, so it cannot be rolled back twice.
        assert api.post(f"/v1/models/{candidate['id']}/rollback").status_code == 409
        assert api.post("/v1/models/999999/rollback").status_code == 404


def label(api: httpx.Client, key: str) -> dict:
    response = api.post("/v1/jobs", json={"bucket": BUCKET, "keys": [key]})
    assert response.status_code == 202, response.text
    return wait_for(
        api, f"/v1/jobs/{response.json()['job_id']}", ("succeeded", "failed", "partially_failed")
    )


def job_version(db: str, job_id: str) -> int:
    with session_scope(db) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.model_version_id


def predictions_of(db: str, job_id: str) -> int:
    with session_scope(db) as session:
        job = session.get(Job, job_id)
        assert job is not None
        count = session.scalar(
            select(func.count(Prediction.id)).where(
                Prediction.model_version_id == job.model_version_id, Prediction.status == "ok"
            )
        )
    assert count is not None  # COUNT always has its row
    return count
