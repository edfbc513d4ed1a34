"""Training runs as the training-run tests start them (manual runs of a tiny model), and the
cleanup that leaves no run holding the one active slot of the shared database."""

from __future__ import annotations

from packsight.models.db import session_scope
from packsight.models.tables.training_runs import TrainingRunState
from packsight.models.training_runs import active_run, finish_run, start_run

HOUR = 3600


def _finish_active(url: str) -> None:
    # The database is shared with other tests: leave no run holding the slot.
    with session_scope(url) as session:
        run = active_run(session)
        if run is not None:
            finish_run(session, run.id, state=TrainingRunState.FAILED, error="test cleanup")


def _start(url: str, *, stale_after_s: float = HOUR) -> str:
    with session_scope(url) as session:
        run = start_run(
            session,
            trigger="manual",
            base_model="tiny",
            quantization="nf4",
            taxonomy="assignment",
            params={},
            stale_after_s=stale_after_s,
        )
        return run.id
