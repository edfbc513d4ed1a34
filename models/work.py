"""Work units: what is left to do, who holds it, and what the broker may have lost.

A unit is added in the transaction that calls for it and deleted in the transaction that
records its outcome, so its row is the whole truth about pending work. A delivery takes a
unit under a random lease token, keeps it alive with heartbeats, and can only finish (or
release) it while it still holds that lease: a second delivery of the same message, or an
old one that outlived its heartbeat, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from packsight.models.tables.base import as_utc, utcnow
from packsight.models.tables.work import UnitState, WorkUnit


class LeaseLostError(RuntimeError):
    """This delivery no longer holds the unit: it was finished, or taken over after the
    delivery's heartbeat went stale. The holder must stop without recording anything."""


@dataclass(frozen=True)
class UnitRef:
    """A snapshot of a unit as a delivery took it."""

    id: int
    kind: str
    job_id: str | None
    item_id: int | None
    training_run_id: str | None
    payload: dict[str, Any]
    cursor: str | None
    failures: int
    last_error: str | None
    lease: str | None = None  # who held it when the snapshot was taken

    @classmethod
    def of(cls, unit: WorkUnit) -> UnitRef:
        return cls(
            id=unit.id,
            kind=unit.kind,
            job_id=unit.job_id,
            item_id=unit.item_id,
            training_run_id=unit.training_run_id,
            payload=dict(unit.payload or {}),
            cursor=unit.cursor,
            failures=unit.failures,
            last_error=unit.last_error,
            lease=unit.lease,
        )


def add_units(session: Session, kind: str, rows: Iterable[dict[str, Any]]) -> None:
    """Record units of one kind (pending); `rows` hold job_id/item_id/training_run_id/payload."""
    values = [{"kind": kind, "state": UnitState.PENDING, "payload": {}} | row for row in rows]
    if values:
        session.execute(insert(WorkUnit), [_defaults(v) for v in values])


def _defaults(values: dict[str, Any]) -> dict[str, Any]:
    # Bulk inserts bypass the ORM's Python-side defaults for omitted columns.
    return {"dispatches": 0, "failures": 0, "created_at": utcnow()} | values


def claim_unit(
    session: Session, unit_id: int, *, lease: str, stale_before: datetime
) -> UnitRef | None:
    """Take the unit under `lease`; None when it is done (deleted) or another delivery holds it
    with a heartbeat newer than `stale_before` (then this message is a duplicate)."""
    unit = session.get(WorkUnit, unit_id, with_for_update=True, populate_existing=True)
    if unit is None:
        return None
    if unit.lease is not None and unit.heartbeat_at and as_utc(unit.heartbeat_at) >= stale_before:
        return None
    unit.lease, unit.state, unit.heartbeat_at = lease, UnitState.RUNNING, utcnow()
    session.flush()
    return UnitRef.of(unit)


def renew_lease(session: Session, unit_id: int, lease: str, **progress: Any) -> bool:
    """Heartbeat (and optionally progress such as `cursor`); False when the lease is lost."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(WorkUnit)
            .where(WorkUnit.id == unit_id, WorkUnit.lease == lease)
            .values(heartbeat_at=utcnow(), **progress)
        ),
    )
    return result.rowcount > 0


def renew_leases(session: Session, unit_ids: Sequence[int], lease: str) -> set[int]:
    """Heartbeat for every unit a delivery holds under `lease`; the ids it still holds."""
    held = session.scalars(
        update(WorkUnit)
        .where(WorkUnit.id.in_(list(unit_ids)), WorkUnit.lease == lease)
        .values(heartbeat_at=utcnow())
        .returning(WorkUnit.id)
        .execution_options(synchronize_session=False)
    )
    return set(held)


def adopt_units(
    session: Session, candidates: Select[WorkUnit], *, lease: str, take: int
) -> list[UnitRef]:
    """Take more units under a lease a delivery already holds: the first of `candidates`
    (units of one kind) that nobody holds, that never failed and may run now, up to `take`
    payload items (a unit's `clip_ids`). Units never published come first, so the broker holds
    no message for them. Rows another delivery is taking at the same moment are skipped, and
    the lease is set only where it is still free (SQLite has no row locks). Units this lease
    took already (a retried transaction) are returned again. A unit that failed before runs
    alone, so that one bad unit cannot keep failing the units delivered beside it."""
    held = list(session.scalars(candidates.where(WorkUnit.lease == lease)))
    take -= sum(_size(unit) for unit in held)
    now = utcnow()
    free = (
        WorkUnit.lease.is_(None),
        WorkUnit.failures == 0,
        WorkUnit.state.in_([UnitState.PENDING, UnitState.DISPATCHED]),
        or_(WorkUnit.not_before.is_(None), WorkUnit.not_before <= now),
    )
    rows = session.scalars(
        candidates.where(*free)
        .order_by(WorkUnit.state != UnitState.PENDING, WorkUnit.id)
        .limit(4 * max(take, 1))
        # Only the units' rows: locking the joined rows too (jobs, items) would skip every
        # unit of a job whose row a settling transaction holds.
        .with_for_update(skip_locked=True, of=WorkUnit)
    ).all()
    chosen = []
    for unit in rows:
        if take <= 0:
            break
        if _size(unit) <= take:
            chosen.append(unit.id)
            take -= _size(unit)
    taken = set(
        session.scalars(
            update(WorkUnit)
            .where(WorkUnit.id.in_(chosen), *free)
            .values(lease=lease, state=UnitState.RUNNING, heartbeat_at=now)
            .returning(WorkUnit.id)
            .execution_options(synchronize_session=False)
        )
    )
    adopted = [replace(UnitRef.of(unit), lease=lease) for unit in rows if unit.id in taken]
    return [UnitRef.of(unit) for unit in held] + adopted


def _size(unit: WorkUnit) -> int:
    return len((unit.payload or {}).get("clip_ids", ()))


def finish_unit(session: Session, unit_id: int, lease: str) -> None:
    """Delete the unit as done, in the transaction that records its outcome (which the caller
    must roll back on LeaseLostError). Call it first: the row lock fences other holders."""
    result = cast(
        CursorResult[Any],
        session.execute(delete(WorkUnit).where(WorkUnit.id == unit_id, WorkUnit.lease == lease)),
    )
    if result.rowcount == 0:
        raise LeaseLostError(f"work unit {unit_id} is no longer held by this delivery")


def discard_unit(session: Session, unit_id: int, lease: str | None) -> bool:
    """Delete a unit still held by `lease` (None: by nobody); False if it changed hands."""
    result = cast(
        CursorResult[Any],
        session.execute(delete(WorkUnit).where(WorkUnit.id == unit_id, _held_by(lease))),
    )
    return result.rowcount > 0


def drop_lease(session: Session, unit_id: int, lease: str) -> bool:
    """Take the unit from a holder found dead (still `lease`, no newer heartbeat since the
    sweeper looked): it is held by nobody from here on."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(WorkUnit)
            .where(WorkUnit.id == unit_id, WorkUnit.lease == lease)
            .values(lease=None, state=UnitState.PENDING)
        ),
    )
    return result.rowcount > 0


def _held_by(lease: str | None) -> ColumnElement[bool]:
    return WorkUnit.lease.is_(None) if lease is None else WorkUnit.lease == lease


def discard_units(session: Session, **subject: object) -> None:
    """Delete every unit of a subject (job_id=, item_id= or training_run_id=) that ended."""
    ((column, value),) = subject.items()
    session.execute(delete(WorkUnit).where(getattr(WorkUnit, column) == value))


def release_unit(
    session: Session,
    unit_id: int,
    lease: str | None,
    *,
    failed: bool = False,
    error: str | None = None,
    not_before: datetime | None = None,
) -> bool:
    """Hand the unit back to be published again (after `not_before`), counting a failure if
    `failed`, as long as `lease` still holds it (None: it is held by nobody)."""
    query = update(WorkUnit).where(WorkUnit.id == unit_id, _held_by(lease))
    values: dict[str, Any] = {"state": UnitState.PENDING, "lease": None, "not_before": not_before}
    if failed:
        values |= {"failures": WorkUnit.failures + 1, "last_error": error}
    result = cast(CursorResult[Any], session.execute(query.values(**values)))
    return result.rowcount > 0


def take_for_dispatch(session: Session, kind: str, *, window: int) -> list[int]:
    """Mark up to `window - already published` pending units of `kind` as dispatched, oldest
    first, and return their ids to publish after the commit. Rows another process is taking
    at the same moment are skipped, never published twice."""
    waiting = session.scalar(
        select(func.count())
        .select_from(WorkUnit)
        .where(WorkUnit.kind == kind, WorkUnit.state == UnitState.DISPATCHED)
    )
    room = window - (waiting or 0)
    if room <= 0:
        return []
    now = utcnow()
    ids = list(
        session.scalars(
            select(WorkUnit.id)
            .where(
                WorkUnit.kind == kind,
                WorkUnit.state == UnitState.PENDING,
                or_(WorkUnit.not_before.is_(None), WorkUnit.not_before <= now),
            )
            .order_by(WorkUnit.id)
            .limit(room)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(WorkUnit)
            .where(WorkUnit.id.in_(ids))
            .values(
                state=UnitState.DISPATCHED,
                dispatched_at=now,
                dispatches=WorkUnit.dispatches + 1,
            )
        )
    return ids


def return_to_pending(session: Session, unit_ids: Sequence[int]) -> None:
    """Units whose message could not be published: publish them with the next top-up."""
    if unit_ids:
        session.execute(
            update(WorkUnit)
            .where(WorkUnit.id.in_(list(unit_ids)), WorkUnit.state == UnitState.DISPATCHED)
            .values(state=UnitState.PENDING)
        )


def waiting_units(session: Session, kinds: Sequence[str]) -> list[tuple[int, datetime]]:
    """(id, dispatched_at) of units published but not taken by any worker, oldest first."""
    rows = session.execute(
        select(WorkUnit.id, WorkUnit.dispatched_at)
        .where(WorkUnit.kind.in_(list(kinds)), WorkUnit.state == UnitState.DISPATCHED)
        .order_by(WorkUnit.dispatched_at, WorkUnit.id)
    )
    return [(unit_id, as_utc(at)) for unit_id, at in rows if at is not None]
