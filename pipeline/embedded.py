"""The embedded default's driver: with no broker, the process that submitted a job (or a
training run) runs its pending units itself, from the same table the sweeper reads in
production. Labelling first, so each video is finished before the next one is decoded."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from packsight.models.tables.base import as_utc, utcnow
from packsight.models.tables.work import UnitKind, UnitState, WorkUnit
from packsight.pipeline.context import Context
from packsight.pipeline.stages import run

log = logging.getLogger(__name__)

ORDER = case(
    {UnitKind.LABEL: 0, UnitKind.SAMPLE: 1, UnitKind.LIST: 2, UnitKind.TRAIN: 3},
    value=WorkUnit.kind,
)


def drive_in_background(ctx: Context, **subject: str) -> None:
    """`drive` for a server process (the embedded API): waits out outages like a worker, and a
    failure ends in the log, not in a lost thread; whatever is left runs on the next start."""
    worker = Context(ctx.settings, ctx.publisher, patient=True)
    try:
        drive(worker, **subject)
    except Exception:
        log.exception("running work in-process stopped; it resumes when the API restarts")


def drive(ctx: Context, *, job_id: str | None = None, training_run_id: str | None = None) -> None:
    """Run the subject's units (every pending unit without a subject) in this process until
    none is left."""
    while True:
        unit_id, wait = ctx.transaction(lambda s: _next(s, ctx, job_id, training_run_id))
        if unit_id is not None:
            run(ctx, unit_id)
        elif wait is not None:
            time.sleep(wait)  # a failed unit's backoff
        else:
            return


def _next(
    session: Session, ctx: Context, job_id: str | None, run_id: str | None
) -> tuple[int | None, float | None]:
    """The next unit to run, or how long until one may run again, or (None, None): done."""
    now = utcnow()
    # A unit left "running" by a process that died (nothing sweeps here) is taken back.
    abandoned = now - timedelta(seconds=ctx.settings.stale_after_s)
    query = select(WorkUnit).where(
        or_(
            WorkUnit.state != UnitState.RUNNING,
            WorkUnit.heartbeat_at < abandoned,
        )
    )
    if job_id is not None:
        query = query.where(WorkUnit.job_id == job_id)
    if run_id is not None:
        query = query.where(WorkUnit.training_run_id == run_id)
    ready = session.scalar(
        query.where(or_(WorkUnit.not_before.is_(None), WorkUnit.not_before <= now))
        .order_by(ORDER, WorkUnit.id)
        .limit(1)
    )
    if ready is not None:
        return ready.id, None
    later = session.scalar(query.with_only_columns(func.min(WorkUnit.not_before)))
    if later is not None:
        return None, max(0.0, (as_utc(later) - now).total_seconds())
    return None, None
