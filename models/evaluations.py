"""Evaluations of a model version: metrics per split and the confusion matrix behind them.

`ModelVersion.metrics` holds one results.json block per split ({"test": {...}, "val": {...}});
`ConfusionCount` holds the matching cells, so the API can serve the matrix without rescoring.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from packsight.labels.metrics import Evaluation
from packsight.models.tables.versions import ConfusionCount, ModelVersion


class UnknownModelVersionError(LookupError):
    """No model version has the given id."""


def record_evaluation(
    session: Session,
    *,
    model_version_id: int,
    split: str,
    evaluation: Evaluation,
    baselines: Mapping[str, Evaluation] | None = None,
) -> None:
    """Store `evaluation` as the model version's result on `split`, replacing an earlier one,
    with the trivial baselines' scores on the same clips beside it.

    Idempotent: recording the same evaluation twice leaves the same rows. Runs in the caller's
    transaction, so metrics and cells change together or not at all.
    """
    # Lock the version row: it serialises concurrent recordings, so neither the metrics merge
    # (read-modify-write of one JSON value) nor delete-then-insert of cells can interleave.
    # SQLite ignores FOR UPDATE but has a single writer anyway.
    version = session.get(ModelVersion, model_version_id, with_for_update=True)
    if version is None:
        raise UnknownModelVersionError(f"model version {model_version_id} not found")
    # A new dict, not an in-place edit: a plain JSON column does not track mutations.
    block: dict[str, object] = {**evaluation.to_dict()}
    if baselines:
        block["baselines"] = {name: b.to_dict() for name, b in baselines.items()}
    version.metrics = {**(version.metrics or {}), split: block}

    session.execute(
        delete(ConfusionCount).where(
            ConfusionCount.model_version_id == model_version_id, ConfusionCount.split == split
        )
    )
    cells = [
        ConfusionCount(
            model_version_id=model_version_id,
            split=split,
            true_operation=true_op,
            predicted_operation=predicted,
            count=n,
        )
        for (true_op, predicted), n in sorted(evaluation.confusion.items())
        if n  # empty cells are implied; storing them would only grow the table
    ]
    session.add_all(cells)
    session.flush()


def confusion_for(
    session: Session, *, model_version_id: int, split: str
) -> dict[tuple[str, str], int]:
    """The stored cells of (model version, split) as {(true, predicted): count}; {} if none."""
    rows = session.execute(
        select(
            ConfusionCount.true_operation,
            ConfusionCount.predicted_operation,
            ConfusionCount.count,
        ).where(ConfusionCount.model_version_id == model_version_id, ConfusionCount.split == split)
    ).all()
    return {(true_op, predicted): n for true_op, predicted, n in rows}
