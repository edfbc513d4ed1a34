"""Evaluation statistics of model versions: the confusion matrix as JSON or a PNG heatmap."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import select

from packsight.api.deps import Authorized, SessionDep
from packsight.api.schemas import ConfusionOut
from packsight.api.validation import INT64_MAX, PRINTABLE
from packsight.labels.confusion_plot import render_confusion_png
from packsight.labels.metrics import NONE_LABEL, confusion_matrix
from packsight.labels.taxonomy import TaxonomyError, load_taxonomy
from packsight.models.evaluations import confusion_for
from packsight.models.tables.versions import ModelVersion
from packsight.storage.keys import shown

router = APIRouter(prefix="/v1/stats", tags=["stats"], dependencies=[Authorized])


def _model_version_or_404(session: SessionDep, ref: str) -> ModelVersion:
    # An all-digit reference is tried as an id first, then as a name, so a version that
    # happens to be named "7" is still reachable. ASCII digits only ("²".isdigit() is true), and
    # no number beyond the BIGINT id column.
    as_id = int(ref) if ref.isascii() and ref.isdigit() else None
    version = session.get(ModelVersion, as_id) if as_id and as_id <= INT64_MAX else None
    if version is None:
        version = session.scalars(select(ModelVersion).where(ModelVersion.name == ref)).first()
    if version is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"model version {shown(ref)} not found")
    return version


@router.get(
    "/confusion",
    response_model=ConfusionOut,
    responses={200: {"content": {"image/png": {}}, "description": "JSON, or PNG with format=png"}},
)
def get_confusion(
    session: SessionDep,
    model_version: Annotated[str, Query(min_length=1, max_length=512, json_schema_extra=PRINTABLE)],
    split: Annotated[str, Query(min_length=1, max_length=32, json_schema_extra=PRINTABLE)] = "test",
    fmt: Annotated[Literal["json", "png"], Query(alias="format")] = "json",
) -> ConfusionOut | Response:
    version = _model_version_or_404(session, model_version)
    metrics = (version.metrics or {}).get(split)
    if metrics is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"model version {version.name!r} has no evaluation on split {split!r}",
        )
    confusion = confusion_for(session, model_version_id=version.id, split=split)
    try:
        operations = list(load_taxonomy(version.taxonomy).operations)
        matrix = confusion_matrix(confusion, operations)
    except (TaxonomyError, ValueError) as exc:
        # Stored data that disagrees with the version's taxonomy is a server-side fault.
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            f"stored evaluation of {version.name!r} does not fit its taxonomy: {exc}",
        ) from exc
    # confusion_matrix adds the "(none)" column exactly when some clip had no answer.
    predicted = operations + ([NONE_LABEL] if len(matrix[0]) > len(operations) else [])

    if fmt == "png":
        png = render_confusion_png(
            matrix, operations, predicted, title=f"{version.name} / {split} ({version.taxonomy})"
        )
        return Response(content=png, media_type="image/png")
    return ConfusionOut(
        model_version=version.name,
        split=split,
        taxonomy=version.taxonomy,
        operations=operations,
        predicted=predicted,
        matrix=matrix,
        metrics=metrics,
    )
