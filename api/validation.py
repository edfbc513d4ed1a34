"""Input rules shared by the schemas and routes: names S3 accepts, numbers the database columns
hold, and no control characters anywhere. Bad input is a 422 naming what is wrong, not a driver
error turned into a 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, Field

from packsight.storage.base import InvalidKeyError
from packsight.storage.keys import (
    MAX_KEY_BYTES,
    bad_character,
    shown,
    validate_bucket,
    validate_key,
    validate_prefix,
)

# Frame numbers and offsets live in INTEGER columns (32-bit signed), ids in BIGINT ones.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_JOB_KEYS = 100_000
# Longest value of any query parameter; each route bounds its own parameters more tightly.
MAX_QUERY_VALUE_CHARS = 2048


def _as_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    # pydantic reports ValueError as a validation error (422); InvalidKeyError is not one.
    def run(value: str) -> str:
        try:
            return check(value)
        except InvalidKeyError as exc:
            raise ValueError(str(exc)) from exc

    return run


def _printable(value: str) -> str:
    if problem := bad_character(value):
        raise ValueError(f"{shown(value)} contains a {problem}")
    return value


# What "no control characters" looks like in a JSON schema (a hint for clients and fuzzers;
# the validators and reject_control_characters enforce it, with clearer messages).
PRINTABLE = {"pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}
# The validators give the clear messages; the JSON-schema hints document the rules in
# /openapi.json (clients and the fuzz test generate from it).
Bucket = Annotated[
    str,
    AfterValidator(_as_value_error(validate_bucket)),
    Field(
        json_schema_extra={
            "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            "minLength": 3,
            "maxLength": 63,
        }
    ),
]
ObjectKey = Annotated[
    str,
    AfterValidator(_as_value_error(validate_key)),
    Field(json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_BYTES, **PRINTABLE}),
]
Prefix = Annotated[
    str,
    AfterValidator(_as_value_error(validate_prefix)),
    Field(json_schema_extra={"maxLength": MAX_KEY_BYTES, **PRINTABLE}),
]
# Free text that ends up in the database (operation names and the like).
PlainText = Annotated[str, AfterValidator(_printable), Field(json_schema_extra=PRINTABLE)]
FrameNumber = Annotated[int, Field(ge=0, le=INT32_MAX)]
# A job or training-run id in a path. Anything that is not a UUID names nothing: a 404.
ResourceId = Annotated[str, Path(description="a UUID", json_schema_extra={"format": "uuid"})]


def _invalid(location: str, name: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, name), "msg": message, "input": None}]
    )


def reject_control_characters(request: Request) -> None:
    """App-wide dependency: no query or path parameter may carry a control character (Postgres
    refuses NUL in text; the others only hide in logs) or be absurdly long. Every route names
    its own tighter bounds; this also covers parameters a route does not declare."""
    for location, params in (
        ("query", request.query_params.multi_items()),
        ("path", request.path_params.items()),
    ):
        for name, value in params:
            if not isinstance(value, str):
                continue
            if problem := bad_character(value):
                raise _invalid(location, name, f"{name} contains a {problem}")
            if len(value) > MAX_QUERY_VALUE_CHARS:
                raise _invalid(
                    location, name, f"{name} is longer than {MAX_QUERY_VALUE_CHARS} characters"
                )


def canonical_uuid(value: str) -> str | None:
    """The stored form of a job or training-run id (a lowercase UUID), or None when `value` is
    not one: such an id cannot name anything (a 404, without asking the database)."""
    try:
        parsed = str(uuid.UUID(value))
    except ValueError:
        return None
    return parsed if parsed == value.lower() else None
