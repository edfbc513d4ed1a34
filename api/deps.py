"""Shared route dependencies, as Annotated aliases so signatures read plainly."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import BackgroundTasks, Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from packsight.models.db import session_scope
from packsight.pipeline.context import Context
from packsight.settings import Settings, get_settings
from packsight.storage.keys import bad_character

SettingsDep = Annotated[Settings, Depends(get_settings)]
_bearer = HTTPBearer(auto_error=False)
_contexts: dict[int, Context] = {}


def get_context(settings: SettingsDep) -> Context:
    """The application layer's context for requests: one per settings object, so storage
    clients and the broker connection are reused; fails fast on outages (no retry window)."""
    if id(settings) not in _contexts:
        from packsight.workers.broker import publisher_for

        _contexts[id(settings)] = Context(settings, publisher_for(settings), patient=False)
    return _contexts[id(settings)]


ContextDep = Annotated[Context, Depends(get_context)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.resolved_database_url) as session:
        yield session


# scope="function": the session commits before the response is sent. With FastAPI's default
# ("request") the commit ran after it, so a failed commit still answered 2xx and its error never
# reached the 503/4xx handlers.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# Tokens are compared as bytes: compare_digest refuses non-ASCII str (a TypeError, i.e. a 500),
# and a header is latin-1, so anything outside printable ASCII cannot be a token we issued.
MAX_TOKEN_BYTES = 1024


def _presented_token(credentials: HTTPAuthorizationCredentials | None) -> bytes | None:
    token = credentials.credentials if credentials else ""
    if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii() or bad_character(token):
        return None
    return token.encode("ascii")


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if expected is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "PACKSIGHT_API_TOKEN is not set")
    presented = _presented_token(credentials)
    if presented is None or not secrets.compare_digest(presented, expected.encode("utf-8")):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = Depends(require_token)


def run_here_if_embedded(background: BackgroundTasks, ctx: Context, **subject: str) -> None:
    """With no broker, this process runs the new work itself, after the response is sent
    (job_id= or training_run_id=)."""
    if ctx.embedded:
        from packsight.pipeline.embedded import drive_in_background

        background.add_task(drive_in_background, ctx, **subject)
