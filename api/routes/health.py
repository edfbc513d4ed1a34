"""Readiness: answers without a token whether the database, the broker and object storage
respond, each within a couple of seconds. Failures are logged; the body only says which."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, text

from packsight.api.deps import SettingsDep
from packsight.models.db import session_factory
from packsight.pipeline.storage import probe_storage
from packsight.settings import Settings

router = APIRouter()
log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
OK, UNAVAILABLE, NOT_CONFIGURED = "ok", "unavailable", "not configured"


class Health(BaseModel):
    status: str
    checks: dict[str, str]


@lru_cache(maxsize=4)
def _postgres_probe_engine(url: str) -> Engine:
    # Apart from the request pool (a health check must not wait behind busy requests), with a
    # connect and a statement timeout so a dead or hung server fails within the deadline.
    timeout_ms = int(CHECK_TIMEOUT_S * 1000)
    return create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=CHECK_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, int(CHECK_TIMEOUT_S)),
            "options": f"-c statement_timeout={timeout_ms}",
        },
    )


def _database(settings: Settings) -> str:
    url = settings.resolved_database_url
    if url.startswith("postgresql"):
        with _postgres_probe_engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
    else:  # SQLite: a local file, no server to wait for
        with session_factory(url)() as session:
            session.execute(text("SELECT 1"))
    return OK


def _broker(settings: Settings) -> str:
    if settings.broker_url is None:
        return NOT_CONFIGURED  # the embedded default runs tasks in-process
    from kombu import Connection

    timeouts = {"socket_connect_timeout": CHECK_TIMEOUT_S, "socket_timeout": CHECK_TIMEOUT_S}
    broker = Connection(
        settings.broker_url, connect_timeout=CHECK_TIMEOUT_S, transport_options=timeouts
    )
    with broker:
        broker.ensure_connection(max_retries=0)  # one attempt: no retry loop
    return OK


def _storage(settings: Settings) -> str:
    probe_storage(settings, timeout_s=CHECK_TIMEOUT_S)
    return OK


CHECKS: dict[str, Callable[[Settings], str]] = {
    "database": _database,
    "broker": _broker,
    "storage": _storage,
}


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(settings: SettingsDep) -> JSONResponse:
    # In parallel, and whatever hangs past the deadline counts as down (its thread is left to
    # its own timeouts rather than holding the answer).
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="healthz")
    futures = {name: pool.submit(check, settings) for name, check in CHECKS.items()}
    wait(futures.values(), timeout=CHECK_TIMEOUT_S + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    checks = {}
    for name, future in futures.items():
        if not future.done():
            log.warning("healthz: %s did not answer within %.0f s", name, CHECK_TIMEOUT_S + 1)
            checks[name] = UNAVAILABLE
        elif (error := future.exception()) is not None:
            log.warning("healthz: %s unavailable: %s: %s", name, type(error).__name__, error)
            checks[name] = UNAVAILABLE
        else:
            checks[name] = future.result()
    healthy = UNAVAILABLE not in checks.values()
    body = Health(status=OK if healthy else UNAVAILABLE, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
