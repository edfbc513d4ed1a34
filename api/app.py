"""The FastAPI application."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from packsight.api.errors import BodySizeLimit, install_error_handlers
from packsight.api.routes import health, jobs, labels, models, stats, training
from packsight.api.validation import reject_control_characters


def create_app() -> FastAPI:
    app = FastAPI(
        title="packsight", version="0.1.0", dependencies=[Depends(reject_control_characters)]
    )
    app.add_middleware(BodySizeLimit)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(labels.router)
    app.include_router(stats.router)
    app.include_router(training.router)
    app.include_router(models.router)
    return app


app = create_app()
