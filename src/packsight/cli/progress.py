"""Progress of a long command on stderr: done / total, rate and ETA, redrawn in place while the
work runs (in this process or on workers). Shown on a terminal only; logs and pipes get the
command's ordinary lines."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import TracebackType

from tqdm import tqdm

# (done, total or None while unknown, a few words on the state)
Reading = tuple[int, int | None, str]
REDRAW_EVERY_S = 1.0


class Progress:
    """A bar fed by `read`, polled on a thread of its own (the work may hold the main one)."""

    def __init__(self, read: Callable[[], Reading], *, unit: str) -> None:
        self._read, self._unit = read, unit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: tqdm | None = None

    @staticmethod
    def wanted() -> bool:
        return sys.stderr.isatty()

    def __enter__(self) -> Progress:
        if self.wanted():
            self._bar = tqdm(total=None, unit=self._unit, file=sys.stderr, dynamic_ncols=True)
            self._thread = threading.Thread(target=self._run, daemon=True, name="progress")
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._redraw()
            self._bar.close()

    def _run(self) -> None:
        while not self._stop.wait(REDRAW_EVERY_S):
            self._redraw()

    def _redraw(self) -> None:
        assert self._bar is not None
        try:
            done, total, state = self._read()
        except Exception:  # the database is busy or away: the next redraw tries again
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix_str(state, refresh=False)
        self._bar.refresh()
