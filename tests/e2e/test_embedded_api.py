"""The API on the embedded default (no broker, a SQLite file): work an earlier API process left
unfinished is run by the next one when it starts, since nothing else would ever sweep it."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from app_fixtures import start_api

from packsight.models.db import session_scope
from packsight.models.migrate import upgrade_database
from packsight.models.tables.jobs import Job
from packsight.pipeline.context import Context
from packsight.pipeline.submission import JobRequest, submit_job
from packsight.settings import Settings
from packsight.video.synth import write_synthetic_archive

pytestmark = pytest.mark.e2e


def test_the_next_api_runs_what_the_last_one_left(tmp_path: Path, tiny_model_dir: Path) -> None:
    write_synthetic_archive(tmp_path / "root" / "archive", videos=2, seed=5, max_seconds=14)
    env = {
        "PACKSIGHT_DATA_DIR": str(tmp_path / "data"),
        "PACKSIGHT_LOCAL_ROOT": str(tmp_path / "root"),
        "PACKSIGHT_MODEL": str(tiny_model_dir),
        "PACKSIGHT_QUANTIZATION": "none",
        "PACKSIGHT_API_TOKEN": secrets.token_urlsafe(24),
    }
    # Strings, as in the environment: pydantic parses each into its field's type.
    fields: dict[str, Any] = {k.removeprefix("PACKSIGHT_").lower(): v for k, v in env.items()}
    settings = Settings(**fields)
    upgrade_database(settings.resolved_database_url)
    # A job recorded, its work not run: as when the API process died after answering.
    job_id = submit_job(Context(settings), JobRequest("archive", prefix="U01")).job_id

    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    api, _ = start_api(clean | env, tmp_path / "api.log")
    try:
        deadline = time.monotonic() + 600
        while True:
            with session_scope(settings.resolved_database_url) as session:
                job = session.get(Job, job_id)
                assert job is not None
                state = job.state
            if state not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, f"job still {state}: {api.log_tail()}"
            time.sleep(0.5)
    finally:
        api.stop()
    assert state == "succeeded"
