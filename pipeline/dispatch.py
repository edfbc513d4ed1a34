"""Publishing work: units are published after the commit that recorded them, a window ahead
of the workers per kind. The broker is only a delivery hint; whatever it loses, the sweeper
finds in the database and publishes again."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Protocol

from packsight.models.tables.work import UnitKind
from packsight.models.work import return_to_pending, take_for_dispatch

if TYPE_CHECKING:
    from packsight.pipeline.context import Context

log = logging.getLogger(__name__)


class BrokerUnavailableError(RuntimeError):
    """The message broker cannot be reached."""


class Publisher(Protocol):
    """How units reach workers (Celery in production; nothing on the embedded default, where
    the caller runs pending units itself)."""

    def publish(self, kind: str, unit_id: int) -> None:
        """Send one unit's message; raises BrokerUnavailableError when the broker is down."""

    def queue_length(self, kind: str) -> int:
        """Messages waiting in the queue of `kind` (shared by the kinds of one queue)."""

    def queue_of(self, kind: str) -> str:
        """The queue that carries units of `kind`."""

    def check(self) -> None:
        """Raise BrokerUnavailableError unless the broker answers."""


def top_up(ctx: Context, kinds: tuple[str, ...] = tuple(UnitKind)) -> int:
    """Publish pending units until each kind has `dispatch_window` waiting; returns how many
    were published. Safe to call from any process at any time."""
    publisher = ctx.publisher
    if publisher is None:
        return 0
    published = 0
    for kind in kinds:
        # Best effort: when the database is down there is nothing to publish from anyway.
        ids = ctx.try_transaction(
            partial(take_for_dispatch, kind=kind, window=ctx.settings.dispatch_window)
        )
        if ids is None:
            return published
        for position, unit_id in enumerate(ids):
            try:
                publisher.publish(kind, unit_id)
                published += 1
            except BrokerUnavailableError as exc:
                # Back to pending so the next top-up (or the sweeper) publishes them; if even
                # that fails, the sweeper sees the broker lacks them and publishes them again.
                log.warning(
                    "broker unavailable, %d %s units left pending: %s",
                    len(ids) - position,
                    kind,
                    exc,
                )
                unsent = ids[position:]
                ctx.try_transaction(partial(return_to_pending, unit_ids=unsent))
                return published
    return published
