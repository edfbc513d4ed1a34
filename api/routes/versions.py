"""Model versions (a base VLM + an adapter, served at /v1/models): which one serves new jobs,
their test metrics, and rollback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from sqlalchemy import select

from packsight.api.deps import Authorized, SessionDep
from packsight.api.schemas import ModelVersionOut
from packsight.api.validation import INT64_MAX
from packsight.models.evaluations import UnknownModelVersionError
from packsight.models.promotions import RollbackError, rollback
from packsight.models.tables.versions import ModelVersion

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Authorized])


@router.get("")
def list_models(session: SessionDep) -> list[ModelVersionOut]:
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id))
    return [ModelVersionOut.model_validate(row) for row in rows]


@router.post("/{version_id}/rollback")
def roll_back(
    version_id: Annotated[int, Path(ge=1, le=INT64_MAX)], session: SessionDep
) -> ModelVersionOut:
    """Stop serving `version_id` and serve again the version it was promoted over. New jobs use
    it at once; GPU workers load it with the first job, without a restart."""
    try:
        restored = rollback(session, version_id)
    except UnknownModelVersionError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except RollbackError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.flush()
    return ModelVersionOut.model_validate(restored)
