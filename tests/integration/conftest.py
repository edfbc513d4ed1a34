"""Fixtures of the pipeline and training-run tests on the shared Postgres: a migrated database,
and for the pipeline a fresh local archive with settings and a context that drive work in-process
(a module's own `db` or `ctx` fixture, as in test_labels.py or test_submission.py, wins over
these)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from manual_runs import _finish_active
from sqlalchemy import delete

from packsight.models.db import session_scope
from packsight.models.migrate import upgrade_database
from packsight.models.tables.base import utcnow
from packsight.models.tables.jobs import Job
from packsight.pipeline.context import Context
from packsight.settings import Settings, get_settings


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    """Fresh files per test: labels already made for a video would otherwise be reused."""
    from packsight.video.synth import write_synthetic_archive

    root = tmp_path / "local-root"
    write_synthetic_archive(root / "videos", videos=2, seed=7, min_seconds=6, max_seconds=11)
    return root


@pytest.fixture(scope="module")
def pipeline_db(postgres_url: str) -> str:
    from packsight.models.migrate import upgrade_database

    upgrade_database(postgres_url)
    return postgres_url


@pytest.fixture
def settings(
    pipeline_db: str,
    tiny_model_dir: Path,
    archive_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    env = {
        "PACKSIGHT_DATABASE_URL": pipeline_db,
        "PACKSIGHT_STORAGE": "local",
        "PACKSIGHT_LOCAL_ROOT": str(archive_root),
        "PACKSIGHT_DATA_DIR": str(tmp_path),
        "PACKSIGHT_MODEL": str(tiny_model_dir),
        "PACKSIGHT_QUANTIZATION": "none",
        "PACKSIGHT_MAX_ATTEMPTS": "2",
        "PACKSIGHT_STALE_AFTER_S": "30",
        "PACKSIGHT_RETRY_BACKOFF_MAX_S": "0.1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PACKSIGHT_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    started = utcnow()
    ctx = Context(settings)  # no publisher: the test runs the work itself
    yield ctx
    # Leave the shared database as found: this test's jobs (with items and units) go.
    with session_scope(settings.resolved_database_url) as session:
        session.execute(delete(Job).where(Job.created_at >= started))


@pytest.fixture
def db(postgres_url: str) -> Iterator[str]:
    upgrade_database(postgres_url)
    _finish_active(postgres_url)
    yield postgres_url
    _finish_active(postgres_url)
