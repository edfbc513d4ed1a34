"""Liveness/readiness: answers without a token."""

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text

from packsight.api.deps import SessionDep

router = APIRouter()


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"database: {exc}") from exc
    return {"status": "ok"}
