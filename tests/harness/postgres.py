"""Postgres for tests: a fresh database on the shared server at :5432, or on a private cluster
that can be paused and resumed."""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from .process import (
    LOOPBACK,
    START_TIMEOUT_S,
    ServiceError,
    _identity,
    _port_open,
    _Stoppable,
    free_port,
)
from .service import PAUSE_TIMEOUT_S, _TempService

SHARED_POSTGRES_PORT = 5432
_INITDB_FLAGS = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
# Loopback TCP only (no Unix socket to clash with the system cluster's); durability is pointless
# for a throwaway cluster and costs seconds per test run.
_PG_SETTINGS = [f"listen_addresses={LOOPBACK}", "unix_socket_directories=", "fsync=off"]
# 200 connections: e2e runs the API and several Celery workers, each with its own pool.
_PG_SETTINGS += ["synchronous_commit=off", "full_page_writes=off", "max_connections=200"]


def _postgres_bin_dir() -> Path:
    def major(initdb: Path) -> int:
        return int(initdb.parts[-3]) if initdb.parts[-3].isdigit() else 0

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=major, reverse=True)
    on_path = [Path(p) for p in (shutil.which("initdb"), "/usr/local/bin/initdb") if p]
    for initdb in [*found, *on_path]:
        if initdb.exists() and (initdb.resolve().parent / "postgres").exists():
            return initdb.resolve().parent
    raise ServiceError("no PostgreSQL server binaries (initdb, postgres): install `postgresql`")


def _postgres_os_user() -> str | None:
    """initdb refuses to run as root, so root runs the private cluster as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "packsight-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    shell = "/usr/sbin/nologin"
    subprocess.run(["useradd", "--system", "--shell", shell, "packsight-pg"], check=True)
    return "packsight-pg"


def _pg_connect(port: int, user: str, dbname: str = "postgres") -> Any:
    import psycopg2

    return psycopg2.connect(host=LOOPBACK, port=port, user=user, dbname=dbname, connect_timeout=3)


class PostgresCluster(_TempService):
    """A throwaway cluster: initdb in a temp dir, then `postgres` in the foreground.

    pause() is a fast shutdown (open transactions roll back, committed data stays); resume()
    starts it again on the same port and data dir."""

    def __init__(self) -> None:
        bin_dir, os_user = _postgres_bin_dir(), _postgres_os_user()
        super().__init__("pg")
        self.port, self.user, data = free_port(), "postgres", self.root / "data"
        try:
            if os_user is not None:
                os.chown(self.root, pwd.getpwnam(os_user).pw_uid, pwd.getpwnam(os_user).pw_gid)
            initdb = subprocess.run(
                [bin_dir / "initdb", "-D", data, *_INITDB_FLAGS],
                cwd=self.root,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S * 2,
                **_identity(os_user),
            )
            if initdb.returncode:
                raise ServiceError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        except BaseException:
            self.stop()
            raise
        cmd: list[str | os.PathLike[str]] = [bin_dir / "postgres", "-D", data, "-p", str(self.port)]
        self._start(
            "postgres",
            cmd + [f"--{setting}" for setting in _PG_SETTINGS],
            ready=lambda: _pg_connect(self.port, self.user).close() or True,
            user=os_user,
            # SIGINT is Postgres's "fast" shutdown; SIGTERM waits for every client to leave.
            stop_signal=signal.SIGINT,
        )

    @property
    def listen_ports(self) -> list[int]:
        return [self.port]


def _shared_postgres_user() -> str | None:
    """A role that may create databases on the Postgres at :5432, if that server answers."""
    if not _port_open(SHARED_POSTGRES_PORT):
        return None
    candidates = (os.environ.get("PGUSER"), getpass.getuser(), "postgres")
    for user in dict.fromkeys(u for u in candidates if u):
        try:
            connection = _pg_connect(SHARED_POSTGRES_PORT, user)
        except Exception:  # wrong role or auth method: try the next, else go private
            continue
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = user")
            row = cursor.fetchone()
        if row and row[0]:
            return user
    return None


class PostgresDatabase(_Stoppable):
    """A fresh, uniquely named database for one test session; stop() drops it (or, on a private
    cluster, removes the whole cluster)."""

    def __init__(self, *, private: bool = False) -> None:
        shared_user = None if private else _shared_postgres_user()
        self.cluster = None if shared_user else PostgresCluster()
        self.port = self.cluster.port if self.cluster else SHARED_POSTGRES_PORT
        self.user = shared_user or "postgres"
        self.name = f"packsight_test_{os.getpid()}_{secrets.token_hex(4)}"
        self.url = f"postgresql+psycopg2://{self.user}@{LOOPBACK}:{self.port}/{self.name}"
        try:
            self._admin(f'CREATE DATABASE "{self.name}"')
        except BaseException:
            if self.cluster:
                self.cluster.stop()
            raise

    @property
    def private(self) -> bool:
        return self.cluster is not None

    def _admin(self, statement: str) -> None:
        connection = _pg_connect(self.port, self.user)
        connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute(statement)

    def _own_cluster(self) -> PostgresCluster:
        if self.cluster is None:
            raise ServiceError("the shared Postgres cannot be paused: use private=True")
        return self.cluster

    def pause(self, timeout_s: float = PAUSE_TIMEOUT_S) -> None:
        """Stop the private cluster (fast shutdown); see PostgresCluster."""
        self._own_cluster().pause(timeout_s)

    def resume(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the private cluster again on the same port, with the same data."""
        self._own_cluster().resume(timeout_s)

    def stop(self) -> None:
        if self.cluster:
            self.cluster.stop()  # the database goes with the cluster, paused or not
        else:
            # FORCE: a test's leftover pool connection must not keep the database alive.
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_database(*, private: bool = False) -> PostgresDatabase:
    """A fresh database on the Postgres at 127.0.0.1:5432 if it answers, else (or if `private`)
    on a cluster of its own, which pause() and resume() can stop and start."""
    return PostgresDatabase(private=private)
