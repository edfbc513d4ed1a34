"""The base of every server the harness starts: a temp dir, one process, and pause()/resume()
that keep both the data and the ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .budget import budget
from .process import LOOPBACK, START_TIMEOUT_S, ProcessGroup, ServiceError, _Stoppable

# Long enough for a loaded machine; a server killed before its clean shutdown may lose data.
PAUSE_TIMEOUT_S = budget(60.0)


class _TempService(_Stoppable):
    """A service owning a temp dir and (once started) a process; stop() removes both."""

    def __init__(self, prefix: str) -> None:
        _remove_orphaned_dirs()
        self.root = Path(tempfile.mkdtemp(prefix=f"packsight-{prefix}-"))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.process: ProcessGroup | None = None
        self._held_ports: list[socket.socket] = []

    @property
    def listen_ports(self) -> list[int]:
        """Every TCP port the server listens on, kept for it while it is paused."""
        raise NotImplementedError

    def _start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ready: Callable[[], object],
        timeout_s: float = START_TIMEOUT_S,
        **options: Any,
    ) -> None:
        log_path = self.root / f"{name.split()[0]}.log"
        self._ready = ready
        try:
            self.process = ProcessGroup(name, argv, log_path=log_path, cwd=self.root, **options)
            self.process.wait_until(ready, what="ready", timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise

    def _running(self) -> ProcessGroup:
        if self.process is None:
            raise ServiceError(f"{type(self).__name__} was never started")
        return self.process

    def pause(self, timeout_s: float = PAUSE_TIMEOUT_S) -> None:
        """Stop the server the way it shuts down cleanly; clients get "connection refused" until
        resume(). Its ports stay reserved meanwhile, its data stays on disk."""
        process = self._running()
        process.stop(timeout_s)
        if process.process.returncode == -signal.SIGKILL:
            raise ServiceError(
                f"{process.name} needed SIGKILL to stop within {timeout_s:.0f} s, so it may have"
                f" lost data; last log lines ({process.log_path}):\n{process.log_tail()}"
            )
        self._release_ports()
        self._held_ports = [_hold(port) for port in self.listen_ports]

    def resume(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server again on the same ports and data (after pause(), or after the
        process was killed) and wait until it serves again."""
        process = self._running()
        self._release_ports()
        process.restart()
        process.wait_until(self._ready, what="ready again", timeout_s=timeout_s)

    def _release_ports(self) -> None:
        for sock in self._held_ports:
            sock.close()
        self._held_ports = []

    def stop(self) -> None:
        self._release_ports()
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _hold(port: int) -> socket.socket:
    """Bind `port` without listening: connections are refused as if nothing were there, while
    free_port() of any test session finds it taken. SO_REUSEADDR lets the bind succeed despite
    the stopped server's connections in TIME_WAIT."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as error:
        sock.close()
        raise ServiceError(f"port {port} was taken while its server stopped: {error}") from error
    return sock


def _remove_orphaned_dirs() -> None:
    """Delete temp dirs of sessions that were killed before they could clean up (a Postgres
    cluster is ~50 MB); their servers died with them, through setpriv's parent-death signal."""
    for owner in Path(tempfile.gettempdir()).glob("packsight-*-*/owner.pid"):
        with contextlib.suppress(OSError, ValueError):
            if not Path(f"/proc/{int(owner.read_text())}").exists():
                shutil.rmtree(owner.parent, ignore_errors=True)
