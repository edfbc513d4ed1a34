"""Training-run lifecycle and the data a run trains on.

At most one run is active (queued or running) at a time: `TrainingRun.active` is True only then
and carries a unique constraint, so two beat processes, the API and the CLI cannot start two,
whatever the timing. A run whose worker vanished stops blocking once its heartbeat is stale.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from packsight.labels.metrics import Evaluation
from packsight.models.evaluations import record_evaluation
from packsight.models.promotions import lock_scope, promote, serving_version
from packsight.models.tables.base import as_utc, utcnow
from packsight.models.tables.labels import Label
from packsight.models.tables.training_runs import (
    ACTIVE_RUN_STATES,
    FINAL_RUN_STATES,
    TrainingRun,
    TrainingRunState,
)
from packsight.models.tables.versions import ModelVersion
from packsight.models.work import discard_units
from packsight.training.judging import Decision
from packsight.training.retraining import LabelledVideo
from packsight.video.identity import VideoIdentity, identity_from_key


class ActiveRunError(RuntimeError):
    """Another training run is queued or running."""

    def __init__(self, run: TrainingRun) -> None:
        super().__init__(
            f"training run {run.id} is already {run.state} (started by {run.trigger} at "
            f"{run.created_at:%Y-%m-%d %H:%M:%S}); one run at a time"
        )
        self.run_id = run.id


class UnknownTrainingRunError(LookupError):
    """No training run has the given id."""


class RunLostError(RuntimeError):
    """This delivery no longer owns the run: a later delivery claimed it, or it was finished
    (e.g. declared abandoned). The holder must stop without touching the run."""


def active_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.active.is_(True)))


def start_run(
    session: Session,
    *,
    trigger: str,
    base_model: str,
    quantization: str,
    taxonomy: str,
    params: dict[str, Any],
    stale_after_s: float,
) -> TrainingRun:
    """Record a new queued run, or raise ActiveRunError if one is active and alive.

    Commit before queueing its task: the worker looks the run up by id."""
    current = active_run(session)
    if current is not None:
        last_sign = current.heartbeat_at or current.created_at
        if utcnow() - as_utc(last_sign) < timedelta(seconds=stale_after_s):
            raise ActiveRunError(current)
        finish_run(
            session,
            current.id,
            state=TrainingRunState.FAILED,
            error=f"abandoned: no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S} "
            f"(more than {stale_after_s:.0f} s); no training worker took it",
        )
        discard_units(session, training_run_id=current.id)
    run = TrainingRun(
        trigger=trigger,
        base_model=base_model,
        quantization=quantization,
        taxonomy=taxonomy,
        params=params,
        active=True,
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        # Another process inserted its run between our check and our insert (the savepoint's
        # rollback has already taken ours out of the session).
        winner = active_run(session)
        if winner is None:  # it finished in between; a retry by the caller will do
            raise
        raise ActiveRunError(winner) from None
    return run


def claim_run(session: Session, run_id: str) -> TrainingRun | None:
    """Mark the run running under a new claim token (`run.claim`), also after a redelivery: the
    latest delivery wins and earlier ones fail their next heartbeat. None when already final."""
    now = utcnow()
    result = cast(
        CursorResult[Any],
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.state.in_(ACTIVE_RUN_STATES))
            .values(state=TrainingRunState.RUNNING, heartbeat_at=now, claim=uuid.uuid4().hex)
        ),
    )
    claimed = result.rowcount
    if not claimed:
        if session.get(TrainingRun, run_id) is None:
            raise UnknownTrainingRunError(f"training run {run_id!r} not found")
        return None
    run = session.get_one(TrainingRun, run_id)  # the update above just matched it
    session.refresh(run)
    if run.started_at is None:
        run.started_at = now
    return run


def heartbeat(session: Session, run_id: str, claim: str, **progress: Any) -> None:
    """Record progress (step, total_steps, dataset, ...) and that the run is alive; raises
    RunLostError when this claim no longer owns the run."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(TrainingRun)
            .where(
                TrainingRun.id == run_id,
                TrainingRun.state == TrainingRunState.RUNNING,
                TrainingRun.claim == claim,
            )
            .values(heartbeat_at=utcnow(), **progress)
        ),
    )
    updated = result.rowcount
    if not updated:
        raise RunLostError(f"training run {run_id} was claimed by another delivery or finished")


def finish_run(
    session: Session, run_id: str, *, state: str, claim: str | None = None, **outcome: Any
) -> bool:
    """Move an active run to its final state; False if it already was final or, with `claim`,
    if that claim no longer owns it."""
    if state not in FINAL_RUN_STATES:
        raise ValueError(f"{state!r} is not a final training run state")
    owned = [TrainingRun.claim == claim] if claim is not None else []
    result = cast(
        CursorResult[Any],
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.state.in_(ACTIVE_RUN_STATES), *owned)
            .values(state=state, active=None, finished_at=utcnow(), **outcome)
        ),
    )
    return bool(result.rowcount)


def labelled_videos(
    session: Session, *, taxonomy: str, bucket: str | None = None
) -> list[LabelledVideo]:
    """Videos that can be trained on: labelled in `taxonomy`, every label verified (imported
    annotations and human corrections are; a video with unverified labels is left out whole,
    since its gaps would be taken for background), and with a known subject for the split."""
    query = select(Label).where(Label.taxonomy == taxonomy)
    if bucket is not None:
        query = query.where(Label.bucket == bucket)
    grouped: dict[tuple[str, str], list[Label]] = {}
    for label in session.scalars(query.order_by(Label.bucket, Label.video_key, Label.start_frame)):
        grouped.setdefault((label.bucket, label.video_key), []).append(label)
    videos = []
    for (bucket_name, key), rows in grouped.items():
        imported = VideoIdentity(
            next((r.subject for r in rows if r.subject), None),
            next((r.session for r in rows if r.session), None),
        )
        # As labelling does: the key's layout first, the import where it shows nothing.
        identity = identity_from_key(key).merged(imported)
        if identity.subject is None or not all(r.verified for r in rows):
            continue
        segments = [(r.operation, r.start_frame, r.end_frame) for r in rows]
        videos.append(LabelledVideo(bucket_name, key, identity.subject, segments, identity.session))
    return videos


@dataclass
class RunOutcome:
    """What a training delivery hands in at the end: the versions it compared, their scores on
    the test split (by version id), the candidate's validation score and its decision."""

    base: ModelVersion
    candidate: ModelVersion
    champion: ModelVersion | None  # what served when the candidate was compared
    test_scores: dict[int, Evaluation]
    validation: Evaluation | None
    decision: Decision
    results: dict[str, Any]  # results.json; its "promotion" block follows the final decision
    artifacts_uri: str
    steps: int
    # The trivial models' scores on the same clips, stored beside each evaluation.
    test_baselines: dict[str, Evaluation] = field(default_factory=dict)
    validation_baselines: dict[str, Evaluation] = field(default_factory=dict)


def complete_run(session: Session, run_id: str, claim: str, outcome: RunOutcome) -> Decision:
    """The run's outcome, its evaluations and the promotion, in the caller's transaction and only
    while `claim` owns the run (RunLostError otherwise). A promotion is withdrawn when the
    serving version changed since the candidate was compared with it (a rollback meanwhile).
    Returns the decision as recorded."""
    decision, candidate, champion = outcome.decision, outcome.candidate, outcome.champion
    if decision.promote:
        lock_scope(session, candidate)
        now = serving_version(
            session,
            base_model=candidate.base_model,
            quantization=candidate.quantization,
            taxonomy=candidate.taxonomy,
        )
        if (now.id if now else None) != (champion.id if champion else None):
            decision = Decision(
                False,
                f"Not promoted: the serving version changed to {now.name if now else 'none'} "
                "while the candidate was evaluated against another; the next run compares with it.",
            )
            outcome.results["promotion"] = {"promoted": False, "reason": decision.reason}
    finished = finish_run(
        session,
        run_id,
        state=TrainingRunState.SUCCEEDED,
        claim=claim,
        decision="promoted" if decision.promote else "rejected",
        decision_reason=decision.reason,
        results=outcome.results,
        artifacts_uri=outcome.artifacts_uri,
        step=outcome.steps,
    )
    if not finished:
        raise RunLostError(f"training run {run_id} is no longer this delivery's to finish")
    for version_id, evaluation in outcome.test_scores.items():
        record_evaluation(
            session,
            model_version_id=version_id,
            split="test",
            evaluation=evaluation,
            baselines=outcome.test_baselines,
        )
    if outcome.validation is not None:
        record_evaluation(
            session,
            model_version_id=candidate.id,
            split="validation",
            evaluation=outcome.validation,
            baselines=outcome.validation_baselines,
        )
    if decision.promote:
        promote(
            session,
            candidate.id,
            reason=decision.reason,
            previous=champion or outcome.base,
            training_run_id=run_id,
        )
    return decision
