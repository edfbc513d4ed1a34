"""The FastAPI application."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from packsight.api.deps import get_context
from packsight.api.errors import BodySizeLimit, install_error_handlers
from packsight.api.routes import (
    health,
    jobs,
    labels,
    metrics,
    review,
    stats,
    training,
    versions,
    videos,
)
from packsight.api.validation import reject_control_characters
from packsight.models.migrate import upgrade_database
from packsight.pipeline.embedded import drive_in_background
from packsight.settings import get_settings


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """On the embedded default nothing sweeps: work an earlier API process left unfinished
    (stopped, killed) is picked up again when this one starts."""
    settings = get_settings()
    if settings.embedded:
        upgrade_database(settings.resolved_database_url)  # its own SQLite file
        ctx = get_context(settings)
        threading.Thread(target=drive_in_background, args=(ctx,), daemon=True).start()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="packsight",
        version="0.1.0",
        dependencies=[Depends(reject_control_characters)],
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(labels.router)
    app.include_router(metrics.router)
    app.include_router(review.router)
    app.include_router(stats.router)
    app.include_router(training.router)
    app.include_router(versions.router)
    app.include_router(videos.router)
    return app


app = create_app()
