"""How the API answers errors it did not raise itself, and the request-size limit."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from packsight.settings import get_settings
from packsight.storage import shown


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
