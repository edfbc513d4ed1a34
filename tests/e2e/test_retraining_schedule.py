"""Retraining on the running stack, started by a real `celery beat` on its own schedule."""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
from app_fixtures import CELERY_BEAT, Stack
from retraining_archive import wait_for
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.tables.training_runs import TrainingRun
from packsight.settings import Settings
from packsight.video.synth import SyntheticVideo

pytestmark = pytest.mark.e2e


def test_beat_starts_the_nightly_run_on_its_own(
    stack: Stack, stack_settings: Settings, verified: list[SyntheticVideo], tmp_path: Path
) -> None:
    """A real `celery beat` with an every-minute crontab: it sends the scheduled task to the cpu
    worker, which records a run (trigger "schedule") with the worker's own settings and queues
    it to the training worker. Labels of videos that are not in S3 (other tests made some) are
    skipped by name, not fatal."""
    db = stack_settings.resolved_database_url
    with session_scope(db) as session:
        since = session.scalar(select(func.max(TrainingRun.created_at)))
    beat = harness.ProcessGroup(
        "beat",
        [*CELERY_BEAT, "-s", str(tmp_path / "schedule"), "--max-interval", "5"],
        log_path=stack.logs / "beat.log",
        env=stack.env | {"PACKSIGHT_TRAINING_SCHEDULE": "* * * * *"},
    )
    try:

        def scheduled_run() -> str | None:
            with session_scope(db) as session:
                return session.scalar(
                    select(TrainingRun.id).where(
                        TrainingRun.trigger == "schedule", TrainingRun.created_at > since
                    )
                )

        beat.wait_until(scheduled_run, what="a scheduled training run", timeout_s=150)
    finally:
        beat.stop()
    with stack.client() as api:
        run = wait_for(api, f"/v1/training-runs/{scheduled_run()}", ("succeeded", "failed"))
    assert run["state"] == "succeeded", run["error"]
    assert run["params"]["bucket"] is None  # the nightly run reads every bucket's labels
    assert run["dataset"]["train_clips"] > 0 and run["decision"] in ("promoted", "rejected")
