"""The tasks: each delivers one work unit (its id is the whole message) to the application
layer, or starts the nightly training run. Which stage runs is the unit's business."""

from __future__ import annotations

import logging

from packsight.models.tables.work import UnitKind
from packsight.models.training_runs import ActiveRunError
from packsight.pipeline import stages
from packsight.pipeline.training_runs import start_training
from packsight.workers.app import SCHEDULED_TRAINING_TASK, TASK_OF, app
from packsight.workers.broker import worker_context

log = logging.getLogger(__name__)


@app.task(name=TASK_OF[UnitKind.LIST])
def list_source(unit_id: int) -> None:
    stages.run(worker_context(), unit_id)


@app.task(name=TASK_OF[UnitKind.SAMPLE])
def sample_video(unit_id: int) -> None:
    stages.run(worker_context(), unit_id)


@app.task(name=TASK_OF[UnitKind.LABEL])
def label_clips(unit_id: int) -> None:
    stages.run(worker_context(), unit_id)


@app.task(name=TASK_OF[UnitKind.TRAIN])
def train_adapter(unit_id: int) -> None:
    stages.run(worker_context(), unit_id)


@app.task(name=SCHEDULED_TRAINING_TASK)
def start_scheduled_training() -> str | None:
    try:
        return start_training(worker_context(), trigger="schedule")
    except ActiveRunError as exc:
        log.info("nightly training skipped: %s", exc)
        return None
