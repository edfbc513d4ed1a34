"""The Celery app. Configured from settings; with no broker it runs tasks in-process (eager),
which is the embedded default."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery, Task
from celery.schedules import crontab
from celery.signals import worker_process_init

from packsight.models.db import dispose_engines
from packsight.settings import Settings, crontab_fields, get_settings

DECODE_TASK = "packsight.sample_video"
INFER_TASK = "packsight.label_clips"
SCHEDULED_TRAINING_TASK = "packsight.start_scheduled_training"
TRAIN_TASK = "packsight.train_adapter"


def configure(app: Celery, settings: Settings) -> None:
    app.conf.update(
        broker_url=settings.broker_url or "memory://",
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
        # Results live in the database; Celery's result backend is not used.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Ack after the task ran, requeue if the worker process died mid-task; a delivery
        # counter (TaskAttempt) caps the requeues so an OOM-killed task cannot loop forever.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_cpu,
        task_routes={
            DECODE_TASK: {"queue": settings.queue_cpu},
            INFER_TASK: {"queue": settings.queue_gpu},
            SCHEDULED_TRAINING_TASK: {"queue": settings.queue_cpu},
            TRAIN_TASK: {"queue": settings.queue_train},
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


app = Celery(
    "packsight",
    include=[
        "packsight.workers.tasks.sample",
        "packsight.workers.tasks.label",
        "packsight.workers.tasks.train",
    ],
)
configure(app, get_settings())


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pooled DB connections inherited from the parent must not be shared with the child.
    dispose_engines()


def retry_or_give_up(task: Task, exc: Exception, give_up: Callable[[str], None]) -> None:
    """Retry an unexpected error with backoff; after the last retry (or at once when tasks
    run in-process) record it with `give_up`, so the item still ends in a final state."""
    settings = get_settings()
    if not settings.embedded and task.request.retries < settings.max_attempts - 1:
        raise task.retry(exc=exc, countdown=min(60, 2 ** (task.request.retries + 1)))
    give_up(f"{type(exc).__name__}: {exc}")
