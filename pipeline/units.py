"""Running one unit of work, whoever delivers it (a Celery task, the embedded driver): take it
under a lease, keep the lease alive while the stage runs, and end the delivery in exactly one
way. Outages are waited out and then leave the unit to the sweeper; an unexpected error counts
against the unit's attempts; a lost lease means another delivery owns the unit now."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from packsight.faults import TransientError
from packsight.models.tables.base import utcnow
from packsight.models.tables.work import UnitKind
from packsight.models.work import (
    LeaseLostError,
    UnitRef,
    claim_unit,
    discard_unit,
    finish_unit,
    release_unit,
    renew_lease,
    renew_leases,
)
from packsight.pipeline import metrics
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import top_up

log = logging.getLogger(__name__)


class Lease:
    """This delivery's hold on its unit, and on any units it adopted to run beside it (the GPU
    stage fills its batches across videos). A background thread renews every unit held every
    `heartbeat_interval_s`, so a live delivery is never swept, however long its stage runs. A
    unit taken over meanwhile (after a long database outage) drops out; the lease is lost when
    it holds nothing any more."""

    def __init__(self, ctx: Context, unit_id: int, *, max_s: float | None = None) -> None:
        self.ctx, self.unit_id = ctx, unit_id
        self.token = secrets.token_hex(16)
        self.lost = False
        self.max_s = max_s if max_s is not None else ctx.settings.max_unit_s
        self.adopted: list[UnitRef] = []
        self._held = {unit_id}
        self._suspects = {unit_id}  # whose fault a failure may be (see `blame`)
        self._finished: set[int] = set()
        self.taken_over = False  # a heartbeat found every unit held taken by others
        self._stop = threading.Event()

    def adopt(self, units: list[UnitRef]) -> None:
        """Units taken under this lease's token (`adopt_units`), run by this delivery."""
        self.adopted += units
        self._held |= {unit.id for unit in units}

    def blame(self, unit_ids: set[int]) -> None:
        """The units a failure may be the fault of (those of the GPU batch that failed); by
        default the delivery's own unit."""
        self._suspects = set(unit_ids)

    def finished(self, unit_id: int) -> None:
        """The unit's outcome is recorded, or it was handed back or found ended: not held."""
        self._held.discard(unit_id)
        self._finished.add(unit_id)

    def unfinished(self, unit: UnitRef) -> list[UnitRef]:
        """The delivery's unit and the adopted ones it still holds, to hand back on failure."""
        return [u for u in [unit, *self.adopted] if u.id in self._held]

    def innocent(self, unit: UnitRef) -> list[UnitRef]:
        """The units still held that a failure is not blamed on."""
        return [u for u in self.unfinished(unit) if u.id not in self._suspects]

    def check(self) -> None:
        """Raise LeaseLostError if a heartbeat found every unit taken over or ended."""
        if self.lost:
            raise LeaseLostError(f"work unit {self.unit_id} was taken over by another delivery")

    def save(self, session: Session, **progress: Any) -> None:
        """Record progress (e.g. a cursor) in the caller's transaction, under the lease."""
        if not renew_lease(session, self.unit_id, self.token, **progress):
            self.lost = True
            self.check()

    @contextmanager
    def kept_alive(self) -> Iterator[Lease]:
        if self.ctx.embedded:  # one process runs everything and nothing sweeps
            yield self
            return
        thread = threading.Thread(target=self._beat, name=f"lease-{self.unit_id}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _beat(self) -> None:
        interval = self.ctx.settings.heartbeat_interval_s
        give_up_at = time.monotonic() + self.max_s
        while not self._stop.wait(interval):
            if time.monotonic() > give_up_at:
                log.error(
                    "work unit %s still running after %.0f s: taken for hung, heartbeats "
                    "stop and the sweeper hands it to another worker",
                    self.unit_id,
                    self.max_s,
                )
                self.lost = True
                return
            asked = set(self._held)
            try:
                renewed = self.ctx.try_transaction(
                    partial(renew_leases, unit_ids=sorted(asked), lease=self.token),
                    quiet=True,
                )
            except Exception:  # not an outage: a bug; stop holding rather than hold forever
                log.exception("work unit %s: heartbeat failed", self.unit_id)
                self.lost = True
                return
            if renewed is not None:
                # Only what this heartbeat asked for and lost: units adopted meanwhile stay.
                # A unit recorded meanwhile is not renewed either, but it was not taken.
                taken = asked - renewed - self._finished
                self._held -= asked - renewed
                if taken and not self._held:
                    self.lost = self.taken_over = True
                    return
            # While the database is away, try again sooner: once it is back, the heartbeat
            # must land before the sweeper thinks this delivery died.
            interval = self.ctx.settings.heartbeat_interval_s if renewed is not None else 1.0


@dataclass(frozen=True)
class Stage:
    """What a kind of unit does (`run`, which records its outcome and finishes the unit under
    the lease), and how its subject fails when the unit's attempts are spent (`give_up`, in the
    caller's transaction, the unit already deleted)."""

    run: Callable[[Context, UnitRef, Lease], None]
    give_up: Callable[[Session, UnitRef, str], None]


def run_unit(ctx: Context, unit_id: int, stages: Mapping[str, Stage]) -> None:
    """Deliver one unit: the whole life of one message."""
    lease = Lease(ctx, unit_id)
    stale_before = utcnow() - timedelta(seconds=ctx.settings.stale_after_s)
    unit = ctx.transaction(
        lambda s: claim_unit(s, unit_id, lease=lease.token, stale_before=stale_before)
    )
    if unit is None:
        log.info("work unit %s is done or held by a live delivery; message dropped", unit_id)
        return
    if unit.kind == UnitKind.TRAIN:
        lease.max_s = ctx.settings.max_training_s
    stage, started, outcome = stages[unit.kind], time.monotonic(), "ok"
    with lease.kept_alive():
        try:
            stage.run(ctx, unit, lease)
        except LeaseLostError as exc:
            outcome = "lease_lost"
            log.warning("work unit %s: %s; this delivery stops", unit_id, exc)
        except TransientError as exc:
            # The outage outlasted the retry window: hand the unit back untouched (no attempt
            # counted), to run again a little later (or, if even this fails, when the sweeper
            # finds it).
            outcome = "outage"
            log.warning("work unit %s left for later: %s", unit_id, exc)
            later = utcnow() + timedelta(seconds=ctx.settings.retry_backoff_max_s)
            for held in lease.unfinished(unit):
                hand_back(ctx, held, lease, "outage", not_before=later)
        except Exception as exc:
            outcome = "failed"
            log.exception("work unit %s (%s) failed", unit_id, unit.kind)
            # The units of the GPU batch that failed (or the delivery's own, for any other
            # failure) fail with it: which one broke it is unknown, and each runs alone from
            # now on (adopt_units takes none that failed). The others go back as they were.
            innocent = lease.innocent(unit)
            for held in innocent:
                hand_back(ctx, held, lease, "untouched")
            for held in lease.unfinished(unit):
                if held not in innocent:
                    error = f"{type(exc).__name__}: {exc}"
                    record_failure(ctx, stage, held, lease.token, error)
    metrics.delivered(unit.kind, outcome, time.monotonic() - started)
    top_up(ctx)


def hand_back(
    ctx: Context, unit: UnitRef, lease: Lease, reason: str, *, not_before: datetime | None = None
) -> None:
    """Release a unit the lease holds without counting an attempt (if the database lets us;
    if not, the sweeper finds it once the heartbeats stop)."""
    back = partial(release_unit, unit_id=unit.id, lease=lease.token, not_before=not_before)
    if ctx.try_transaction(back):
        lease.finished(unit.id)
        metrics.handed_back(unit.kind, reason)


def record_failure(ctx: Context, stage: Stage, unit: UnitRef, lease: str, error: str) -> None:
    """Count a delivery that raised: publish the unit again after a backoff, or, once the
    attempts are spent, fail its subject for good."""
    pause = min(ctx.settings.retry_backoff_max_s, 5.0 * 2 ** (unit.failures + 1))
    try:
        ctx.try_transaction(
            lambda s: count_failure(s, ctx, stage, unit, lease, error, pause_s=pause)
        )
    except LeaseLostError:
        log.warning("work unit %s was taken over before its failure was recorded", unit.id)


def count_failure(
    session: Session,
    ctx: Context,
    stage: Stage,
    unit: UnitRef,
    lease: str | None,
    error: str,
    *,
    pause_s: float,
) -> None:
    """In the caller's transaction: one more failed attempt of the unit, held by `lease`
    (None: by nobody, the sweeper took it from a dead holder). At max_attempts its subject
    fails with `error`; before, it is published again after `pause_s`."""
    attempts = unit.failures + 1
    if attempts >= ctx.settings.max_attempts:
        if lease is not None:
            finish_unit(session, unit.id, lease)
        elif not discard_unit(session, unit.id, None):
            return  # taken meanwhile: its new holder decides
        stage.give_up(session, unit, f"gave up after {attempts} attempts: {error}")
        metrics.after_commit(session, metrics.UNITS_GIVEN_UP.labels(unit.kind).inc)
    else:
        not_before = utcnow() + timedelta(seconds=pause_s) if pause_s else None
        if release_unit(session, unit.id, lease, failed=True, error=error, not_before=not_before):
            reason = "error" if lease is not None else "worker_lost"
            metrics.after_commit(session, lambda: metrics.handed_back(unit.kind, reason))
