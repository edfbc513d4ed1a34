"""What every use-case works with: the settings, the database (with outages waited out), object
storage, and the publisher that hands work to the broker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

from sqlalchemy.orm import Session

from packsight.models.db import session_scope
from packsight.pipeline.dispatch import Publisher
from packsight.pipeline.retry import RetryingStorage, RetryPolicy, is_transient
from packsight.pipeline.storage import open_artifact_storage, open_storage
from packsight.settings import Settings
from packsight.storage.base import Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    # None on the embedded default: pending work is run in-process by the caller.
    publisher: Publisher | None = None
    # Workers wait out outages; an API request or a command fails fast instead.
    patient: bool = True
    _policy: RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        window = self.settings.transient_retry_s if self.patient else 0.0
        self._policy = RetryPolicy(window_s=window, max_backoff_s=self.settings.retry_backoff_max_s)

    @property
    def embedded(self) -> bool:
        return self.publisher is None

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @cached_property
    def storage(self) -> Storage:
        """The user's videos."""
        return RetryingStorage(open_storage(self.settings), self._policy)

    @cached_property
    def artifacts(self) -> Storage:
        """packsight's own objects (frame packs, adapters, training outputs)."""
        return RetryingStorage(
            self._policy.call(lambda: open_artifact_storage(self.settings), what="object storage"),
            self._policy,
        )

    def transaction(self, fn: Callable[[Session], T], *, what: str = "database") -> T:
        """Run `fn` in one transaction, committed; retried whole if the database is away."""

        def attempt() -> T:
            with session_scope(self.settings.resolved_database_url) as session:
                return fn(session)

        return self._policy.call(attempt, what=what)

    def try_transaction(self, fn: Callable[[Session], T], *, quiet: bool = False) -> T | None:
        """`fn` in one transaction, once; None (logged unless `quiet`) if the database cannot
        be reached."""
        try:
            with session_scope(self.settings.resolved_database_url) as session:
                return fn(session)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if not quiet:
                log.warning("database unavailable (%s); retried later", type(exc).__name__)
            return None
