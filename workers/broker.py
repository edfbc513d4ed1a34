"""Celery as the application layer's publisher, the sweeper thread of `celery beat`, and the
rule that every process on one Redis uses the same visibility timeout."""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

import redis
from amqp.exceptions import ChannelError
from celery import Celery
from kombu.exceptions import OperationalError

from packsight.pipeline.context import Context
from packsight.pipeline.dispatch import BrokerUnavailableError
from packsight.pipeline.sweeper import Sweeper
from packsight.settings import Settings, get_settings
from packsight.workers.app import TASK_OF, app, configure, queue_of

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, redis.RedisError, OSError)
# A publish retries briefly: the unit is already in the database, and the sweeper publishes
# whatever could not be sent.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
VISIBILITY_KEY = "packsight:visibility_timeout_s"


class CeleryPublisher:
    def __init__(self, celery: Celery, settings: Settings) -> None:
        self.celery, self.settings = celery, settings

    def queue_of(self, kind: str) -> str:
        return queue_of(self.settings, kind)

    def publish(self, kind: str, unit_id: int) -> None:
        try:
            self.celery.send_task(
                TASK_OF[kind],
                args=[unit_id],
                queue=self.queue_of(kind),
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(f"broker unavailable: {type(exc).__name__}") from exc

    def queue_length(self, kind: str) -> int:
        try:
            with self.celery.connection_for_read() as connection:
                declared = connection.default_channel.queue_declare(
                    queue=self.queue_of(kind), passive=True
                )
                return int(declared.message_count)
        except ChannelError as exc:
            if str(getattr(exc, "reply_code", "")) != "404":
                raise
            return 0  # no such queue (Redis drops an empty queue's key): nothing waits in it
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(f"broker unavailable: {type(exc).__name__}") from exc

    def check(self) -> None:
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=5)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError(
                "the message broker is unavailable; nothing was recorded, retry later"
            ) from exc


@lru_cache
def worker_context() -> Context:
    """The context of tasks in this worker process (built after any fork)."""
    settings = get_settings()
    return Context(settings, publisher=CeleryPublisher(app, settings))


def publisher_for(settings: Settings) -> CeleryPublisher | None:
    """A publisher for processes that only submit work (API, CLI); None on the embedded
    default, where the submitting process runs the work itself."""
    if settings.embedded:
        return None
    celery = Celery("packsight")
    configure(celery, settings)
    return CeleryPublisher(celery, settings)


def claim_visibility_timeout(celery: Celery, settings: Settings) -> None:
    """Refuse to start with another visibility timeout than the processes already on this
    Redis: a consumer with a shorter one would hand every queue's long tasks out again early.
    The value is held for ten minutes after the last process (re)claimed it."""
    url = settings.broker_url
    if url is None or not url.startswith(("redis://", "rediss://")):
        return  # only Redis has a visibility timeout
    client = redis.Redis.from_url(url, socket_timeout=10)
    mine = str(settings.visibility_timeout_s)
    try:
        # SET NX then GET, not one SET NX GET: that needs Redis 7, and 6.2 is still common.
        if client.set(VISIBILITY_KEY, mine, nx=True, ex=600):
            return  # the first process on this broker
        held = client.get(VISIBILITY_KEY)  # bytes (no decode_responses), or nil if it expired
        assert held is None or isinstance(held, bytes)
        if held is None:
            client.set(VISIBILITY_KEY, mine, nx=True, ex=600)
        elif held.decode() != mine:
            raise SystemExit(
                f"PACKSIGHT_VISIBILITY_TIMEOUT_S is {mine} here but {held.decode()} in the "
                "processes already using this Redis; every worker and beat of one broker must use "
                "the same value (change it everywhere, then restart them)"
            )
        client.expire(VISIBILITY_KEY, 600)
    except redis.RedisError as exc:
        log.warning("could not check the visibility timeout on the broker: %s", exc)
    finally:
        client.close()


def start_sweeper(celery: Celery, settings: Settings) -> threading.Thread:
    """Run the sweeper every `sweep_interval_s` in a thread of this (beat) process."""
    # Impatient: an outage ends the pass at once, so the sweeper knows the database was away
    # (and gives heartbeats a stale period to resume) instead of blocking in retries.
    publisher = CeleryPublisher(celery, settings)
    sweeper = Sweeper(Context(settings, publisher=publisher, patient=False))
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.sweep_interval_s):
            try:
                sweeper.sweep()
                claim_visibility_timeout(celery, settings)
            except Exception:  # a bug in one pass must not end all sweeping
                log.exception("sweep failed")

    thread = threading.Thread(target=loop, name="sweeper", daemon=True)
    thread.start()
    log.info(
        "sweeper: every %.0f s, units stale after %.0f s",
        settings.sweep_interval_s,
        settings.stale_after_s,
    )
    return thread
