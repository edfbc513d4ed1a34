"""The Celery app: queues, routes, the nightly schedule, and the hooks that start the sweeper in
`celery beat`, check a worker's broker settings when it starts, and serve the Prometheus metrics
of workers and beat. Tasks only deliver work units; what they do lives in the application layer
(packsight.pipeline)."""

from __future__ import annotations

import logging

from celery import Celery
from celery.schedules import crontab
from celery.signals import (
    beat_init,
    import_modules,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from packsight.models.db import dispose_engines
from packsight.models.tables.work import UnitKind
from packsight.pipeline import metrics_serving
from packsight.settings import Settings, get_settings
from packsight.settings.checks import crontab_fields

log = logging.getLogger(__name__)

TASK_OF: dict[str, str] = {
    UnitKind.LIST: "packsight.list_source",
    UnitKind.SAMPLE: "packsight.sample_video",
    UnitKind.LABEL: "packsight.label_clips",
    UnitKind.TRAIN: "packsight.train_adapter",
}
SCHEDULED_TRAINING_TASK = "packsight.start_scheduled_training"


def queue_of(settings: Settings, kind: str) -> str:
    return {
        UnitKind.LIST: settings.queue_cpu,
        UnitKind.SAMPLE: settings.queue_cpu,
        UnitKind.LABEL: settings.queue_gpu,
        UnitKind.TRAIN: settings.queue_train,
    }[UnitKind(kind)]


def configure(app: Celery, settings: Settings) -> None:
    app.conf.update(
        broker_url=settings.broker_url or "memory://",
        # Results live in the database; Celery's result backend is not used.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Ack after the task ran, so a message whose worker dies is not lost with it. A copy
        # delivered while the first still runs finds the unit's lease alive and is dropped.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker outage is waited out, however long
        # A running task keeps its lease in Postgres; losing the broker connection must not
        # cancel it (its outcome is recorded in the database, not acknowledged to Redis).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=settings.queue_cpu,
        task_routes={
            **{task: {"queue": queue_of(settings, kind)} for kind, task in TASK_OF.items()},
            SCHEDULED_TRAINING_TASK: {"queue": settings.queue_cpu},
        },
        timezone=settings.timezone,
        # `celery beat` sends the nightly run; the run's unique active flag (not beat) makes
        # sure that two beats, or a beat and a manual run, never train at the same time.
        beat_schedule=training_schedule(settings),
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
    )


def training_schedule(settings: Settings) -> dict[str, dict]:
    if not settings.training_schedule:
        return {}
    return {
        "nightly-training": {
            "task": SCHEDULED_TRAINING_TASK,
            "schedule": crontab(**crontab_fields(settings.training_schedule)),
        }
    }


app = Celery("packsight", include=["packsight.workers.tasks.units"])
configure(app, get_settings())


@import_modules.connect
def _metrics_files(sender: Celery | None = None, **_: object) -> None:
    # A worker or beat (in init_worker) imports its task modules next, which define the metrics;
    # prefork's children fork later still. Flower and `celery report` import the task modules
    # outside init_worker: they keep prometheus_client's default mode.
    if sender is not None and sender.loader.worker_initialized and get_settings().metrics_port:
        metrics_serving.prepare_multiprocess_dir()


@worker_ready.connect
def _serve_metrics(**_: object) -> None:
    settings = get_settings()
    metrics_serving.serve(settings.metrics_port, settings.metrics_host, what="worker")


@worker_process_shutdown.connect
def _pool_process_exits(pid: int | None = None, **_: object) -> None:
    if pid is not None:
        metrics_serving.process_exited(pid)


@worker_init.connect
def _check_broker_settings(**_: object) -> None:
    from packsight.workers.broker import claim_visibility_timeout

    claim_visibility_timeout(app, get_settings())


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pooled DB connections inherited from the parent must not be shared with the child.
    dispose_engines()


@beat_init.connect
def _start_sweeper(**_: object) -> None:
    from packsight.workers.broker import claim_visibility_timeout, start_sweeper

    settings = get_settings()
    claim_visibility_timeout(app, settings)
    start_sweeper(app, settings)
    metrics_serving.serve(settings.metrics_port, settings.metrics_host, what="beat")
