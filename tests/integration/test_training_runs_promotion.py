"""Model promotion on real Postgres: never two serving versions in one scope, the serving version
switches for new jobs and rolls back, and a finished run promotes only over the version it was
compared with."""

from __future__ import annotations

import uuid

import pytest
from manual_runs import _start
from sqlalchemy.exc import IntegrityError

from packsight.models.db import session_scope
from packsight.models.jobs import get_or_create_model_version
from packsight.models.promotions import RollbackError, promote, rollback, serving_version
from packsight.models.tables.training_runs import TrainingRun
from packsight.models.tables.versions import ModelVersion
from packsight.models.training_runs import RunLostError, RunOutcome, claim_run
from packsight.pipeline.submission import job_model_version
from packsight.settings import Settings

pytestmark = pytest.mark.integration


def test_two_serving_versions_in_one_scope_are_impossible(db: str) -> None:
    model = f"tiny-{uuid.uuid4().hex[:8]}"
    with session_scope(db) as session:
        a, b = (
            get_or_create_model_version(
                session, base_model=model, adapter=name, quantization="nf4", taxonomy="assignment"
            )
            for name in ("a", "b")
        )
        a.is_serving = True
        ids = a.id, b.id
    # Whatever path tries it (a race between promote and rollback), the database refuses.
    with pytest.raises(IntegrityError), session_scope(db) as session:
        version = session.get(ModelVersion, ids[1])
        assert version is not None
        version.is_serving = True


def _settings(model: str) -> Settings:
    return Settings(model=model, quantization="nf4", taxonomy="assignment")


def test_promotion_switches_new_jobs_and_rollback_restores(db: str) -> None:
    model = f"tiny-{uuid.uuid4().hex[:8]}"  # its own serving scope
    with session_scope(db) as session:
        base = get_or_create_model_version(
            session, base_model=model, adapter=None, quantization="nf4", taxonomy="assignment"
        )
        first, second = (
            get_or_create_model_version(
                session,
                base_model=model,
                adapter=f"artifact://a/{name}",
                quantization="nf4",
                taxonomy="assignment",
            )
            for name in ("one", "two")
        )
        ids = base.id, first.id, second.id
        # Nothing promoted yet: jobs use the configured base model.
        assert job_model_version(session, _settings(model)).id == base.id
        with pytest.raises(RollbackError, match="not serving"):
            rollback(session, first.id)
        promote(session, first.id, reason="won", previous=base)
        promote(session, second.id, reason="won again")
    base_id, first_id, second_id = ids

    with session_scope(db) as session:
        assert job_model_version(session, _settings(model)).id == second_id
        # An explicitly configured adapter wins over the promoted one.
        pinned = Settings(model=model, adapter="/adapters/pinned", taxonomy="assignment")
        assert job_model_version(session, pinned).adapter_uri == "/adapters/pinned"
        assert rollback(session, second_id).id == first_id
    with session_scope(db) as session:
        serving = serving_version(
            session, base_model=model, quantization="nf4", taxonomy="assignment"
        )
        assert serving is not None and serving.id == first_id
        assert rollback(session, first_id).id == base_id
        assert job_model_version(session, _settings(model)).id == base_id
        # The base was never promoted over anything: nothing further back.
        with pytest.raises(RollbackError, match="nothing to roll back to"):
            rollback(session, base_id)


def _outcome(
    base: ModelVersion,
    candidate: ModelVersion,
    champion: ModelVersion | None,
    promote_it: bool,
) -> RunOutcome:
    from packsight.labels.metrics import Evaluation
    from packsight.training.judging import Decision

    score = Evaluation(oca=0.5, tiou_at_05=0.5, aa_at_1=0.5, count=4, missing=0, confusion={})
    ids = {v.id for v in (base, candidate, champion) if v is not None}
    return RunOutcome(
        base=base,
        candidate=candidate,
        champion=champion,
        test_scores=dict.fromkeys(ids, score),
        validation=None,
        decision=Decision(promote_it, "better" if promote_it else "not better"),
        results={"promotion": {"promoted": promote_it}},
        artifacts_uri="artifact://a/training-runs/x",
        steps=7,
    )


def test_completing_a_run_promotes_only_over_the_version_it_was_compared_with(db: str) -> None:
    from packsight.models.training_runs import complete_run

    model = f"tiny-{uuid.uuid4().hex[:8]}"
    with session_scope(db) as session:
        base, champion, first, second = (
            get_or_create_model_version(
                session, base_model=model, adapter=name, quantization="nf4", taxonomy="assignment"
            )
            for name in (None, "champion", "first", "second")
        )
        promote(session, champion.id, reason="earlier run", previous=base)
        session.expunge_all()

    run_id = _start(db)
    with session_scope(db) as session:
        claimed = claim_run(session, run_id)
        assert claimed is not None and claimed.claim is not None
        claim = claimed.claim
        # Compared with the champion, which still serves: promoted, evaluations stored.
        decision = complete_run(session, run_id, claim, _outcome(base, first, champion, True))
    assert decision.promote
    with session_scope(db) as session:
        promoted = session.get(ModelVersion, first.id)
        assert promoted is not None and promoted.is_serving
        assert promoted.metrics is not None and promoted.metrics["test"]["clips"] == 4
        run = session.get(TrainingRun, run_id)
        assert run is not None
        assert (run.decision, run.step, run.active) == ("promoted", 7, None)
        rollback(session, first.id)  # the operator puts the champion back

    run_id = _start(db)
    with session_scope(db) as session:
        claimed = claim_run(session, run_id)
        assert claimed is not None and claimed.claim is not None
        claim = claimed.claim
        rollback(session, champion.id)  # ... and, while this run evaluates, the base
        session.commit()
        decision = complete_run(session, run_id, claim, _outcome(base, second, champion, True))
    assert not decision.promote and "serving version changed" in decision.reason
    with session_scope(db) as session:
        base_row = session.get(ModelVersion, base.id)
        assert base_row is not None and base_row.is_serving
        second_row = session.get(ModelVersion, second.id)
        assert second_row is not None and not second_row.is_serving
        run = session.get(TrainingRun, run_id)
        assert run is not None and run.results is not None
        assert run.decision == "rejected" and run.results["promotion"]["promoted"] is False

    # A delivery that lost its claim records nothing.
    run_id = _start(db)
    with session_scope(db) as session:
        claimed = claim_run(session, run_id)
        assert claimed is not None and claimed.claim is not None
        stale = claimed.claim
        claim_run(session, run_id)
        with pytest.raises(RunLostError):
            complete_run(session, run_id, stale, _outcome(base, second, None, True))


def test_a_run_samples_as_the_serving_adapter_was_trained_unless_told_otherwise(db: str) -> None:
    """A default sampler other than the champion's must not leave every nightly candidate
    incomparable with it (never promoted): the run keeps the champion's."""
    from packsight.pipeline.context import Context
    from packsight.pipeline.training_runs import fail_run, record_run
    from packsight.training.retraining import RunParams
    from packsight.video.sampling import SAMPLER, SAMPLERS, FrameSettings

    model = f"tiny-{uuid.uuid4().hex[:8]}"

    def run_sampler(sampler: str | None = None) -> str:
        settings = Settings(database_url=db, model=model, quantization="nf4")
        if sampler is not None:  # as if PACKSIGHT_SAMPLER were set
            settings = Settings(database_url=db, model=model, quantization="nf4", sampler=sampler)
        run_id = record_run(Context(settings), trigger="test")
        with session_scope(db) as session:
            params = RunParams.from_json(session.get_one(TrainingRun, run_id).params)
            fail_run(session, run_id, "only its parameters were wanted")
        return params.sampler

    other = next(name for name in SAMPLERS if name != SAMPLER)
    assert run_sampler() == SAMPLER  # nothing serving yet: the default
    with session_scope(db) as session:
        adapter = get_or_create_model_version(
            session, base_model=model, adapter="artifact://a/other", quantization="nf4",
            taxonomy="assignment",
        )  # fmt: skip
        adapter.settings = {"frames": FrameSettings(sampler=other).to_json()}
        promote(session, adapter.id, reason="trained with the other sampler")
    assert run_sampler() == other
    assert run_sampler(sampler=SAMPLER) == SAMPLER  # asked for explicitly
