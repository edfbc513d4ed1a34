"""Training runs: start one by hand (the nightly one comes from beat), follow it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, status
from sqlalchemy import select

from packsight.api.deps import Authorized, ContextDep, SessionDep, run_here_if_embedded
from packsight.api.schemas import TrainingRunCreate, TrainingRunOut
from packsight.api.validation import ResourceId, canonical_uuid
from packsight.models.tables.training_runs import TrainingRun
from packsight.models.training_runs import ActiveRunError
from packsight.pipeline.dispatch import BrokerUnavailableError
from packsight.pipeline.training_runs import start_training
from packsight.storage.keys import shown

router = APIRouter(prefix="/v1/training-runs", tags=["training"], dependencies=[Authorized])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def start_run(
    body: TrainingRunCreate, ctx: ContextDep, session: SessionDep, background: BackgroundTasks
) -> TrainingRunOut:
    try:
        run_id = start_training(ctx, trigger="manual", config=body.config, bucket=body.bucket)
    except ActiveRunError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except BrokerUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    run_here_if_embedded(background, ctx, training_run_id=run_id)
    return TrainingRunOut.model_validate(session.get(TrainingRun, run_id))


@router.get("")
def list_runs(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[TrainingRunOut]:
    rows = session.scalars(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit))
    return [TrainingRunOut.model_validate(row) for row in rows]


@router.get("/{run_id}")
def get_run(run_id: ResourceId, session: SessionDep) -> TrainingRunOut:
    stored_id = canonical_uuid(run_id)
    run = session.get(TrainingRun, stored_id) if stored_id else None
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"training run {shown(run_id)} not found")
    return TrainingRunOut.model_validate(run)
