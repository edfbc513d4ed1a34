"""The base of every server the harness starts: a temp dir and one process."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .process import ProcessGroup, _Stoppable


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
