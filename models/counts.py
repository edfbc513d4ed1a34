"""How many jobs, items, clips, work units and training runs are in each state, counted by
GROUP BY when asked (the metrics' scrape): Postgres is the truth, nothing here is incremented."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, select, text
from sqlalchemy.orm import QueryableAttribute, Session

from packsight.models.tables.clips import Clip, Prediction, PredictionStatus
from packsight.models.tables.jobs import ItemState, Job, JobItem, JobState
from packsight.models.tables.training_runs import TrainingRun, TrainingRunState
from packsight.models.tables.work import UnitKind, UnitState, WorkUnit

# A scrape must not hold a connection for long on a busy database.
STATEMENT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class StateCounts:
    jobs: dict[str, int]
    items: dict[str, int]
    # labelled / failed: prediction rows (one per clip and model version) by status; pending:
    # clips of queued or running jobs without an outcome under their job's model version.
    clips: dict[str, int]
    units: dict[tuple[str, str], int]  # (kind, state)
    training_runs: dict[str, int]


def _by(session: Session, column: QueryableAttribute[str], states: Iterable[str]) -> dict[str, int]:
    counted = {
        row[0]: row[1] for row in session.execute(select(column, func.count()).group_by(column))
    }
    return {str(state): counted.get(state, 0) for state in states} | counted


def state_counts(session: Session) -> StateCounts:
    """Every known state is present (0 when no row is in it), so a series never vanishes."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    outcomes = _by(session, Prediction.status, PredictionStatus)
    has_outcome = exists().where(
        Prediction.clip_id == Clip.id, Prediction.model_version_id == Job.model_version_id
    )
    pending = session.scalar(
        select(func.count())
        .select_from(Clip)
        .join(JobItem, and_(JobItem.video_id == Clip.video_id, JobItem.sampling == Clip.sampling))
        .join(Job, Job.id == JobItem.job_id)
        .where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]), ~has_outcome)
    )
    units = {(str(kind), str(state)): 0 for kind in UnitKind for state in UnitState}
    rows = session.execute(
        select(WorkUnit.kind, WorkUnit.state, func.count()).group_by(WorkUnit.kind, WorkUnit.state)
    )
    units |= {(kind, state): count for kind, state, count in rows}
    return StateCounts(
        jobs=_by(session, Job.state, JobState),
        items=_by(session, JobItem.state, ItemState),
        clips={
            "labelled": outcomes.get(PredictionStatus.OK, 0),
            "failed": outcomes.get(PredictionStatus.FAILED, 0),
            "pending": pending or 0,
        },
        units=units,
        training_runs=_by(session, TrainingRun.state, TrainingRunState),
    )
