"""The sweeper: Postgres decides what is left to do, so it can drive every job and training run
to a final state whatever the broker lost or whichever worker died. Each pass

1. takes back units whose holder stopped sending heartbeats (its worker died) and publishes
   them again, counting the loss against the unit's attempts;
2. publishes again units whose message the broker no longer has (a restart without
   persistence, a publish that failed after the commit);
3. re-creates work for open items that have none (a safety net: nothing should need it);
4. tops up every queue to its dispatch window.

Passes are safe to run from several processes at once (rows are locked, skipping those another
sweeper holds), though one `packsight beat` is the intended setup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from packsight.models.jobs import item_clips, settle_item, settle_job
from packsight.models.tables.base import as_utc, utcnow
from packsight.models.tables.clips import Clip, Prediction
from packsight.models.tables.jobs import FINAL_ITEM_STATES, ItemState, Job, JobItem, JobState
from packsight.models.tables.work import UnitKind, UnitState, WorkUnit
from packsight.models.work import (
    UnitRef,
    add_units,
    drop_lease,
    return_to_pending,
    waiting_units,
)
from packsight.pipeline import metrics
from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import BrokerUnavailableError, top_up
from packsight.pipeline.retry import is_transient
from packsight.pipeline.stages import STAGES
from packsight.pipeline.units import count_failure

log = logging.getLogger(__name__)

DOING: dict[str, str] = {
    UnitKind.LIST: "listing the job's source",
    UnitKind.SAMPLE: "decoding this video",
    UnitKind.LABEL: "labelling these clips",
    UnitKind.TRAIN: "training",
}


@dataclass
class SweepReport:
    dead: int = 0  # units taken back from a worker that stopped sending heartbeats
    lost: int = 0  # units whose message the broker no longer had
    recreated: int = 0  # open items given work they lacked
    published: int = 0

    def __bool__(self) -> bool:
        return bool(self.dead or self.lost or self.recreated)


class Sweeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # When the database came back after this sweeper last failed to reach it: heartbeats
        # could not be written while it was away, so nobody is judged dead until its holder
        # had a whole stale period to send one again.
        self.database_back_at: datetime | None = None
        self._database_down = False

    def sweep(self) -> SweepReport:
        """One pass; an outage of the database or the broker ends it early (logged)."""
        report, outcome = SweepReport(), "error"
        try:
            self._sweep(report)
            outcome = "ok"
        except BrokerUnavailableError as exc:
            outcome = "broker_unavailable"
            log.warning("sweep cut short, broker unavailable: %s", exc)
        except Exception as exc:
            if not is_transient(exc):
                raise
            outcome = "database_unavailable"
            log.warning("sweep cut short, database unavailable: %s", type(exc).__name__)
            self._database_down = True
            return report
        finally:
            metrics.swept(
                outcome, taken_back=report.dead, republished=report.lost, recreated=report.recreated
            )
        if report:
            log.info("sweep: %s", report)
        return report

    def _sweep(self, report: SweepReport) -> None:
        settings = self.ctx.settings
        now = utcnow()
        if self._database_down:
            self.database_back_at, self._database_down = now, False
        stale_before = now - timedelta(seconds=settings.stale_after_s)
        if self.database_back_at is None or self.database_back_at <= stale_before:
            report.dead = self._step(self._take_back_dead, stale_before)
        report.lost = self._step(self._republish_lost, stale_before)
        report.recreated = self._step(
            lambda before: recreate_missing(self.ctx, before), stale_before
        )
        report.published = top_up(self.ctx)

    @staticmethod
    def _step(step: Callable[[datetime], int], stale_before: datetime) -> int:
        """One step of a pass; a bug in it must not keep the others (publishing above all)
        from running. Outages end the pass (the next one retries)."""
        try:
            return step(stale_before)
        except BrokerUnavailableError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("sweep step %s failed", getattr(step, "__name__", "recreate"))
            return 0

    def _take_back_dead(self, stale_before: datetime) -> int:
        ids = self.ctx.transaction(
            lambda s: list(
                s.scalars(
                    select(WorkUnit.id).where(
                        WorkUnit.state == UnitState.RUNNING, WorkUnit.heartbeat_at < stale_before
                    )
                )
            )
        )
        taken = 0
        for unit_id in ids:
            try:
                taken += self.ctx.transaction(
                    partial(self._take_back, unit_id=unit_id, stale_before=stale_before)
                )
            except Exception as exc:
                if is_transient(exc):
                    raise
                # One unit that cannot be handled must not keep the others from being.
                log.exception("work unit %s could not be taken back", unit_id)
        return taken

    def _take_back(self, session: Session, unit_id: int, stale_before: datetime) -> bool:
        """One dead holder's unit: checked, taken and counted in one transaction, so a holder
        that sends a heartbeat meanwhile keeps it."""
        unit = _stale_unit(session, unit_id, stale_before)
        if unit is None or unit.lease is None:  # a heartbeat came, or it finished
            return False
        silent = (utcnow() - stale_before).total_seconds()
        error = (
            f"the worker was lost while {DOING.get(unit.kind, 'working')} (no heartbeat "
            f"for {silent:.0f} s: killed, out of memory, or its machine went away)"
        )
        log.warning("work unit %s (%s): %s", unit.id, unit.kind, error)
        drop_lease(session, unit.id, unit.lease)
        count_failure(session, self.ctx, STAGES[unit.kind], unit, None, error, pause_s=0)
        return True

    def _republish_lost(self, stale_before: datetime) -> int:
        """Units published long enough ago that are neither taken by a worker nor waiting in
        their queue any more: the broker lost them."""
        publisher = self.ctx.publisher
        if publisher is None:
            return 0
        queues: dict[str, list[str]] = {}
        for kind in UnitKind:
            queues.setdefault(publisher.queue_of(kind), []).append(kind)
        lost: list[int] = []
        for queue, kinds in queues.items():
            waiting = self.ctx.transaction(partial(waiting_units, kinds=kinds))
            # Queues are first in, first out: the oldest units missing from the queue are the
            # ones lost. A message a worker has just taken but not yet claimed looks missing
            # for a moment, hence only units published more than a stale period ago.
            missing = len(waiting) - publisher.queue_length(kinds[0])
            if missing > 0:
                old = [unit_id for unit_id, at in waiting if at < stale_before]
                lost += old[:missing]
                log.warning("queue %s lacks %d published units; publishing again", queue, missing)
        self.ctx.transaction(lambda s: return_to_pending(s, lost))
        return len(lost)


def _stale_unit(session: Session, unit_id: int, stale_before: datetime) -> UnitRef | None:
    unit = session.get(WorkUnit, unit_id, with_for_update=True, populate_existing=True)
    if unit is None or unit.state != UnitState.RUNNING or unit.heartbeat_at is None:
        return None
    if as_utc(unit.heartbeat_at) >= stale_before:
        return None
    return UnitRef.of(unit)


def recreate_missing(ctx: Context, stale_before: datetime) -> int:
    """Open items of open jobs that have no work unit and did not change for a stale period get
    the work their state calls for, or are settled; then jobs whose items all ended are settled.
    One transaction per item (item locks are taken before job locks, as everywhere). Returns
    how many items were touched."""
    ids = ctx.transaction(lambda s: list(s.scalars(_orphaned_items(stale_before))))
    for item_id in ids:
        ctx.transaction(partial(_give_work, item_id=item_id, stale_before=stale_before))
    ctx.transaction(lambda s: _settle_jobs(s, stale_before))
    return len(ids)


def _open_jobs() -> Select:
    return select(Job.id).where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))


def _orphaned_items(stale_before: datetime) -> Select:
    has_unit = exists().where(WorkUnit.item_id == JobItem.id)
    return select(JobItem.id).where(
        JobItem.job_id.in_(_open_jobs()),
        JobItem.state.not_in(FINAL_ITEM_STATES),
        JobItem.updated_at < stale_before,
        ~has_unit,
    )


def _give_work(session: Session, item_id: int, stale_before: datetime) -> None:
    still = session.scalar(
        _orphaned_items(stale_before).where(JobItem.id == item_id).with_for_update()
    )
    if still is None:  # it moved on meanwhile
        return
    item = session.get_one(JobItem, item_id)  # locked above
    log.warning("item %s (%s) had no work left although open; recreating it", item.id, item.key)
    if item.state != ItemState.INFERRING:
        add_units(session, UnitKind.SAMPLE, [{"job_id": item.job_id, "item_id": item.id}])
        return
    job = session.get_one(Job, item.job_id)
    labelled = select(Prediction.clip_id).where(Prediction.model_version_id == job.model_version_id)
    missing = list(session.scalars(item_clips(item).where(Clip.id.not_in(labelled))))
    if missing:
        row = {"job_id": job.id, "item_id": item.id, "payload": {"clip_ids": missing}}
        add_units(session, UnitKind.LABEL, [row])
    else:
        settle_item(session, item_id=item.id)


def _settle_jobs(session: Session, stale_before: datetime) -> None:
    """Open jobs with no open item left, and listings that lost their unit, are ended."""
    open_jobs = _open_jobs()
    open_item = exists().where(JobItem.job_id == Job.id, JobItem.state.not_in(FINAL_ITEM_STATES))
    for job_id in session.scalars(open_jobs.where(Job.listed.is_(True), ~open_item)):
        settle_job(session, job_id=job_id)
    listing = exists().where(WorkUnit.job_id == Job.id, WorkUnit.kind == UnitKind.LIST)
    orphaned = open_jobs.where(Job.listed.is_(False), Job.created_at < stale_before, ~listing)
    for job in session.scalars(select(Job).where(Job.id.in_(orphaned))):
        job.listed, job.error = True, "the listing of the source was lost; items listed so far run"
        session.flush()
        settle_job(session, job_id=job.id)
