"""The migrations build exactly the schema the models describe, on SQLite and on Postgres, and
upgrade a database that holds work from before the upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from packsight.models.migrate import upgrade_database
from packsight.models.tables.base import Base

pytestmark = pytest.mark.integration


def differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade_database(url)
    assert differences(url) == []


def test_migrations_match_the_models_on_postgres() -> None:
    import harness

    with harness.postgres_database() as database:
        upgrade_database(database.url)
        assert differences(database.url) == []


def test_jobs_in_flight_during_the_upgrade_get_their_work_back(tmp_path: Path) -> None:
    """Before work units existed, pending work lived in the broker only: after the upgrade the
    sweeper re-creates it from the items' states."""
    from sqlalchemy import select, text

    from packsight.models.db import session_scope
    from packsight.models.tables.base import utcnow
    from packsight.models.tables.work import UnitKind, WorkUnit
    from packsight.pipeline.context import Context
    from packsight.pipeline.sweeper import recreate_missing
    from packsight.settings import Settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_database(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO model_versions (id, name, base_model, quantization, taxonomy, "
            "is_serving, created_at) VALUES (1, 'm@base', 'm', 'nf4', 'assignment', 0, "
            "'2026-11-01 00:00:00')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO jobs (id, state, bucket, model_version_id, params, created_at) "
            "VALUES ('j1', 'running', 'b', 1, '{}', '2026-11-01 00:00:00')"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO job_items (id, job_id, key, state, attempts, updated_at) "
            "VALUES (1, 'j1', 'a.mp4', 'queued', 0, '2026-11-01 00:00:00')"
        ))  # fmt: skip
    engine.dispose()
    upgrade_database(url)
    assert recreate_missing(Context(Settings(database_url=url)), utcnow()) == 1
    with session_scope(url) as session:
        units = session.scalars(select(WorkUnit)).all()
    assert [(u.kind, u.item_id, u.state) for u in units] == [(UnitKind.SAMPLE, 1, "pending")]
