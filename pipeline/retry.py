"""Waiting out infrastructure outages: retry with capped exponential backoff and full jitter for
a bounded window, then give up with a TransientError so the work is left to the sweeper."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from packsight.faults import TransientError
from packsight.pipeline import metrics
from packsight.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


class OutageError(TransientError):
    """A dependency stayed unavailable for the whole retry window."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service  # "database", "object storage"


# Postgres error classes that pass by themselves: connection exceptions (08), insufficient
# resources (53), the server shutting down or restarting (57P01-57P03), and the conflicts a
# retry resolves: serialization failure, deadlock, lock not available.
_PASSING_SQLSTATE_CLASSES = ("08", "53")
_PASSING_SQLSTATES = {"57P01", "57P02", "57P03", "40001", "40P01", "55P03"}


def is_transient(exc: BaseException) -> bool:
    """True for errors of infrastructure that may pass: connection lost or refused, timeouts,
    a database restarting, deadlocks and serialization failures, SQLite's "database is locked",
    S3 5xx/throttling. A query the database refuses (a missing table, a bad value, a statement
    timeout) is not: retrying it would only wait, then fail the same way."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DisconnectionError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError | InterfaceError):
            return _passing_driver_error(exc.orig)
    return False


def _passing_driver_error(error: BaseException | None) -> bool:
    code = getattr(error, "pgcode", None)
    if code:  # Postgres said why
        return code[:2] in _PASSING_SQLSTATE_CLASSES or code in _PASSING_SQLSTATES
    if type(error).__module__.startswith("sqlite3"):
        text = str(error).lower()
        return "locked" in text or "busy" in text
    # psycopg2 errors without an SQLSTATE: the connection could not be made or broke off.
    return True


@dataclass(frozen=True)
class RetryPolicy:
    window_s: float
    max_backoff_s: float
    first_backoff_s: float = 0.5

    def backoff(self, what: str) -> Backoff:
        return Backoff(self, what)

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """`fn()`, retried while it raises a transient error, for at most `window_s`."""
        backoff = self.backoff(what)
        while True:
            try:
                return fn()
            except Exception as exc:
                backoff.wait(exc)


class Backoff:
    """The waits between the attempts of one operation under a policy."""

    def __init__(self, policy: RetryPolicy, what: str) -> None:
        self.policy, self.what = policy, what
        self.deadline = time.monotonic() + policy.window_s
        self.attempt = 0

    def wait(self, exc: Exception) -> None:
        """Sleep before the next attempt; re-raise `exc` if it is not transient, OutageError
        once the window is spent."""
        if not is_transient(exc):
            raise exc
        self.attempt += 1
        ceiling = min(self.policy.max_backoff_s, self.policy.first_backoff_s * 2**self.attempt)
        pause = random.uniform(0, ceiling)
        if time.monotonic() + pause > self.deadline:
            metrics.OUTAGES_OUTLASTED.labels(self.what).inc()
            raise OutageError(
                self.what,
                f"{self.what}: still unavailable after {self.policy.window_s:.0f} s ({exc})",
            ) from exc
        if self.attempt == 1 or self.attempt % 10 == 0:
            log.warning("%s unavailable (%s: %s); retrying", self.what, type(exc).__name__, exc)
        metrics.OUTAGE_RETRIES.labels(self.what).inc()
        time.sleep(pause)


class RetryingStorage:
    """A Storage whose every call waits out S3 outages under `policy`. Only workers use it: an
    API request or a command should fail fast and say so instead."""

    def __init__(self, inner: Storage, policy: RetryPolicy) -> None:
        self.inner, self.policy = inner, policy

    def _call(self, fn: Callable[[], T]) -> T:
        return self.policy.call(fn, what="object storage")

    def bucket_exists(self, bucket: str) -> bool:
        return self._call(lambda: self.inner.bucket_exists(bucket))

    def ensure_bucket(self, bucket: str) -> None:
        self._call(lambda: self.inner.ensure_bucket(bucket))

    def list_objects(
        self, bucket: str, prefix: str = "", start_after: str = ""
    ) -> Iterator[ObjectInfo]:
        # A listing broken off by an outage resumes after the last key it yielded; the retry
        # window counts from the last progress, not from the start of a long listing.
        last, backoff = start_after, self.policy.backoff("object storage")
        while True:
            try:
                for info in self.inner.list_objects(bucket, prefix, last):
                    last = info.key
                    yield info
                    backoff = self.policy.backoff("object storage")
                return
            except Exception as exc:
                backoff.wait(exc)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        return self._call(lambda: self.inner.head(bucket, key))

    def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        return self._call(lambda: self.inner.download(bucket, key, dest))

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._call(lambda: self.inner.get_bytes(bucket, key))

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put_bytes(bucket, key, data))

    def delete(self, bucket: str, keys: list[str]) -> None:
        self._call(lambda: self.inner.delete(bucket, keys))

    def url(self, bucket: str, key: str, *, expires_s: int) -> str:
        return self.inner.url(bucket, key, expires_s=expires_s)
