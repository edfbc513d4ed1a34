"""Loopback ports and ProcessGroup: one command in its own process group, with the faults a
chaos test needs (kill the leader, kill the group, restart)."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .budget import budget

LOOPBACK = "127.0.0.1"
# Generous: a shared machine under load starts services several times slower than when idle.
START_TIMEOUT_S = budget(90.0)
STOP_TIMEOUT_S = budget(15.0)
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
    first, last = _session_ports(20000, low - 1)
    for _ in range(500):
        port = random.randint(first, last) if low > 21000 else _kernel_port()
        if port not in _handed_out_ports and _bindable(port):
            _handed_out_ports.add(port)
            return port
    raise ServiceError("no free loopback port found")


def _session_ports(first: int, last: int) -> tuple[int, int]:
    """This session's share of [first, last]: test sessions running side by side (pytest-xdist
    sets PYTEST_XDIST_WORKER=gw<i>) never draw the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return first, last
    size = (last - first + 1) // count
    start = first + int(worker[2:]) * size
    return start, start + size - 1


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


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie awaiting its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not yet dead (zombies only wait for their reaper)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(stat.parent.name))
    return members


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
        self._popen_options: dict[str, Any] = {
            "args": [*prefix, *map(str, argv)],
            "env": {**os.environ, **(env or {})},
            "cwd": cwd,
            **_identity(user),
        }
        self._spawn()

    def _spawn(self) -> None:
        # The parent-death signal follows the thread that forks, not the process: a server
        # started from a short-lived thread (a threading.Timer) would be stopped as it ends.
        if threading.current_thread() is not threading.main_thread():
            raise ServiceError(f"{self.name}: start and restart services from the main thread")
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._popen_options,
            )

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the group's id."""
        return self.process.pid

    def children(self) -> list[int]:
        """Pids of the group's other live members, orphans of a killed leader included."""
        return sorted(pid for pid in _live_group_members(self.pid) if pid != self.pid)

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the current run's output (earlier runs' stay above it in the log)."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
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

    def kill_leader(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGKILL the leader alone, as `kill -9 <pid>` does: its children live on as orphans
        (unless, like Celery's prefork pool, they asked to die with their parent)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout_s)

    def kill(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGKILL every member of the group at once and wait until none runs."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while survivors := _live_group_members(self.pid):
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name}: processes {survivors} survived SIGKILL")
            time.sleep(0.05)

    def _signal_group(self, sig: signal.Signals) -> None:
        # A reaped leader's pid stays reserved only while other members of its group live;
        # signalling an empty group could reach an unrelated one that was given the number.
        if self.process.poll() is None or _live_group_members(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the leader to stop, then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            # Only the leader gets the polite signal: celery and postgres stop their own
            # children in order, which a group-wide signal would cut short.
            self.ask_to_stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        self.kill(timeout_s)

    def ask_to_stop(self) -> None:
        """The polite half of stop(), without waiting (see stop_all)."""
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)

    def restart(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Start the command again with the same environment, appending to the same log. Like a
        supervisor, first stops what is left of the group (a live leader politely, orphans of a
        killed one with SIGKILL). Wait for readiness with wait_until()."""
        self.stop(timeout_s)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {self.name} restarted ---\n".encode())
        self._spawn()


def stop_all(groups: Sequence[ProcessGroup], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """stop() for several groups at once: all are asked first, so a stack shuts down in the
    time of its slowest process rather than the sum of them."""
    for group in groups:
        group.ask_to_stop()
    for group in groups:
        group.stop(timeout_s)
