"""How the API answers errors it did not raise itself."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
