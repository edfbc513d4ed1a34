"""What the API answers when a backing service is down, and the request-size limit.

A database, object store or broker that cannot be reached is a 503 ("retry later"), not a 500:
nothing is wrong with the request. The body names the service only; driver messages carry
hosts, ports and user names, so they go to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from packsight.pipeline.dispatch import BrokerUnavailableError
from packsight.pipeline.retry import OutageError
from packsight.settings import get_settings
from packsight.storage.base import StorageUnavailableError
from packsight.storage.keys import shown

log = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
STORAGE_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)
BROKER_ERRORS = (
    BrokerOperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def _unavailable(service: str, exc: Exception, request: Request) -> JSONResponse:
    log.warning(
        "%s %s: %s unavailable: %s: %s",
        request.method,
        request.url.path,
        service,
        type(exc).__name__,
        exc,
    )
    return JSONResponse(
        {"detail": f"{service} unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable("database", exc, request)


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable("object storage", exc, request)


async def _broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable("broker", exc, request)


async def _outage(request: Request, exc: Exception) -> JSONResponse:
    # The application layer's retries gave up (at once, for requests): it names the service.
    return _unavailable(getattr(exc, "service", "a backing service"), exc, request)


async def _storage_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status >= 500:  # the S3 server failing or throttling (503 SlowDown)
        return _unavailable("object storage", exc, request)
    # Any other refusal (wrong credentials, a policy) is a fault of this deployment.
    raise exc


def _echoed(value: object) -> object:
    """What a 422 may echo of the input: short scalars; long strings cut (a key can be 1 KiB);
    no lists or objects (a refused 100,001-key list would come back whole)."""
    if isinstance(value, str):
        return value if len(value) <= 100 else shown(value)
    if value is None or isinstance(value, int | float | bool):
        return value
    return None


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = [
        {**error, "input": _echoed(error.get("input"))} for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    for errors, handler in (
        (DATABASE_ERRORS, _database_unavailable),
        (STORAGE_ERRORS, _storage_unavailable),
        (BROKER_ERRORS, _broker_unavailable),
        ((StorageUnavailableError,), _storage_unavailable),
        ((BrokerUnavailableError,), _broker_unavailable),
        ((OutageError,), _outage),
        ((ClientError,), _storage_refused),
    ):
        for error in errors:
            app.add_exception_handler(error, handler)


class RequestTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body larger than {limit} bytes (the limit is PACKSIGHT_MAX_REQUEST_BYTES)",
        )


class BodySizeLimit:
    """Refuse request bodies over `max_request_bytes`: at once when Content-Length says so,
    else (chunked bodies) as soon as the bytes read pass the limit, before the whole body is
    held in memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_request_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _send_too_large(scope, receive, send, RequestTooLargeError(limit))
            return

        received = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI's body parsing passes it on as it is.
                    raise RequestTooLargeError(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except RequestTooLargeError as exc:
            if response_started:
                raise
            await _send_too_large(scope, receive, send, exc)


async def _send_too_large(
    scope: Scope, receive: Receive, send: Send, exc: RequestTooLargeError
) -> None:
    await JSONResponse({"detail": exc.detail}, status_code=413)(scope, receive, send)
