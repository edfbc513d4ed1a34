"""Which model version serves new labelling jobs, and its history.

Serving is scoped to (base model, quantization, taxonomy): the versions a deployment configured
with that model can switch between. Every change is a `ModelPromotion` row, so a rollback knows
what served before.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from packsight.models.evaluations import UnknownModelVersionError
from packsight.models.tables.versions import ModelPromotion, ModelVersion

PROMOTE = "promote"
ROLLBACK = "rollback"


class RollbackError(ValueError):
    """The rollback is not possible; the message says why."""


def _scope(version: ModelVersion) -> tuple[ColumnElement[bool], ...]:
    return (
        ModelVersion.base_model == version.base_model,
        ModelVersion.quantization == version.quantization,
        ModelVersion.taxonomy == version.taxonomy,
    )


def lock_scope(session: Session, version: ModelVersion) -> None:
    """Lock every version of the scope, not only the serving one (a switch that committed while
    this one waited would otherwise go unseen), in id order so two switches cannot deadlock.
    The partial unique index on serving versions is the backstop; SQLite has one writer."""
    session.execute(
        select(ModelVersion.id).where(*_scope(version)).order_by(ModelVersion.id).with_for_update()
    ).all()


def serving_version(
    session: Session, *, base_model: str, quantization: str, taxonomy: str
) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.base_model == base_model,
            ModelVersion.quantization == quantization,
            ModelVersion.taxonomy == taxonomy,
            ModelVersion.is_serving.is_(True),
        )
    )


def _switch(
    session: Session,
    version_id: int,
    *,
    action: str,
    reason: str,
    previous: ModelVersion | None = None,
    training_run_id: str | None = None,
) -> ModelPromotion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise UnknownModelVersionError(f"model version {version_id} not found")
    lock_scope(session, version)
    current = list(
        session.scalars(
            select(ModelVersion)
            .where(*_scope(version), ModelVersion.is_serving)
            .execution_options(populate_existing=True)
        )
    )
    for row in current:
        row.is_serving = False
    session.flush()  # before the new one is marked: the index admits one serving row at a time
    if previous is None and current:
        previous = current[0]
    version.is_serving = True
    record = ModelPromotion(
        action=action,
        model_version_id=version.id,
        previous_version_id=previous.id if previous is not None else None,
        training_run_id=training_run_id,
        reason=reason,
    )
    session.add(record)
    session.flush()
    return record


def promote(
    session: Session,
    version_id: int,
    *,
    reason: str,
    previous: ModelVersion | None = None,
    training_run_id: str | None = None,
) -> ModelPromotion:
    """Make the version the serving one of its scope. `previous` names what it replaces when
    nothing was marked serving yet (the base model that served by default)."""
    return _switch(
        session,
        version_id,
        action=PROMOTE,
        reason=reason,
        previous=previous,
        training_run_id=training_run_id,
    )


def rollback(session: Session, version_id: int) -> ModelVersion:
    """Replace the serving version `version_id` with the one it was promoted over."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise UnknownModelVersionError(f"model version {version_id} not found")
    lock_scope(session, version)
    session.refresh(version)  # as it is now that no switch can run
    if not version.is_serving:
        raise RollbackError(
            f"model version {version_id} is not serving; only the serving one can be rolled back"
        )
    promoted = session.scalar(
        select(ModelPromotion)
        .where(ModelPromotion.model_version_id == version_id, ModelPromotion.action == PROMOTE)
        .order_by(ModelPromotion.id.desc())
        .limit(1)
    )
    if promoted is None or promoted.previous_version_id is None:
        raise RollbackError(
            f"model version {version_id} was not promoted over another version; nothing to "
            "roll back to"
        )
    _switch(
        session,
        promoted.previous_version_id,
        action=ROLLBACK,
        reason=f"rollback of model version {version_id}",
        previous=version,
    )
    return session.get_one(ModelVersion, promoted.previous_version_id)  # _switch found it


def history(session: Session, *, limit: int = 50) -> list[ModelPromotion]:
    return list(
        session.scalars(select(ModelPromotion).order_by(ModelPromotion.id.desc()).limit(limit))
    )
