"""The harness's Postgres: a fresh database per session, a private cluster that cleans up, and
pause()/resume() that keep the port and the data."""

from __future__ import annotations

import os

import harness
import pytest
import sqlalchemy as sa
from harness import pid_alive
from harness.process import _bindable, _port_open

pytestmark = pytest.mark.integration


def test_postgres_database_is_fresh_and_writable(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
            # A temporary table: proves writes work without leaving state for later tests.
            connection.execute(sa.text("CREATE TEMPORARY TABLE probe (id int)"))
            connection.execute(sa.text("INSERT INTO probe VALUES (1)"))
            assert connection.execute(sa.text("SELECT id FROM probe")).scalar_one() == 1
    finally:
        engine.dispose()
    assert name.startswith("packsight_test_")
    assert str(os.getpid()) in name  # unique to this test session


def test_private_postgres_cluster_starts_and_cleans_up() -> None:
    # The path CI takes when no Postgres answers on :5432.
    with harness.postgres_database(private=True) as database:
        assert database.private and database.port != harness.SHARED_POSTGRES_PORT
        engine = sa.create_engine(database.url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        cluster = database.cluster
        assert cluster is not None and cluster.process is not None
    assert not pid_alive(cluster.process.pid)
    assert not cluster.root.exists()
    assert not _port_open(database.port)


def test_private_postgres_pauses_and_resumes_with_its_data() -> None:
    with harness.postgres_database(private=True) as database:
        engine = sa.create_engine(database.url, pool_pre_ping=True)
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE kept (note text)"))
            connection.execute(sa.text("INSERT INTO kept VALUES ('written before the pause')"))
        assert database.cluster is not None and database.cluster.process is not None
        before = database.cluster.process.pid

        database.pause()
        assert not pid_alive(before)
        with pytest.raises(sa.exc.OperationalError, match="refused"):
            engine.connect()
        assert not _bindable(database.port)  # kept for the cluster, not handed out meanwhile

        database.resume()
        assert database.cluster.process.pid != before
        # The pool's connection died with the old server; pre-ping replaces it.
        with engine.connect() as connection:
            note = connection.execute(sa.text("SELECT note FROM kept")).scalar_one()
        engine.dispose()
    assert note == "written before the pause"
