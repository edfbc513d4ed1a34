"""Training-run bookkeeping and model promotion on real Postgres: one active run at a time (even
when two processes race), stale runs give way, only verified labels are trained on, and the
serving version switches and rolls back."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from packsight.models.db import session_scope
from packsight.models.jobs import get_or_create_model_version
from packsight.models.labels import add_correction, replace_video_labels
from packsight.models.migrate import upgrade_database
from packsight.models.promotions import RollbackError, promote, rollback, serving_version
from packsight.models.tables import ModelVersion, TrainingRun, TrainingRunState, utcnow
from packsight.models.training_runs import (
    ActiveRunError,
    RunLostError,
    active_run,
    claim_run,
    finish_run,
    heartbeat,
    labelled_videos,
    start_run,
)
from packsight.pipeline.submission import job_model_version
from packsight.settings import Settings

pytestmark = pytest.mark.integration
HOUR = 3600


@pytest.fixture
def db(postgres_url: str) -> str:
    upgrade_database(postgres_url)
    _finish_active(postgres_url)
    yield postgres_url
    _finish_active(postgres_url)


def _finish_active(url: str) -> None:
    # The database is shared with other tests: leave no run holding the slot.
    with session_scope(url) as session:
        run = active_run(session)
        if run is not None:
            finish_run(session, run.id, state=TrainingRunState.FAILED, error="test cleanup")


def _start(url: str, *, stale_after_s: float = HOUR) -> str:
    with session_scope(url) as session:
        run = start_run(
            session,
            trigger="manual",
            base_model="tiny",
            quantization="nf4",
            taxonomy="assignment",
            params={},
            stale_after_s=stale_after_s,
        )
        return run.id


def test_one_active_run_until_it_finishes(db: str) -> None:
    first = _start(db)
    with pytest.raises(ActiveRunError) as refused:
        _start(db)
    assert refused.value.run_id == first
    with session_scope(db) as session:
        assert claim_run(session, first).state == TrainingRunState.RUNNING
        assert finish_run(session, first, state=TrainingRunState.SUCCEEDED, decision="rejected")
        # A second finish (a redelivered task) changes nothing.
        assert not finish_run(session, first, state=TrainingRunState.FAILED, error="late")
        assert claim_run(session, first) is None
    second = _start(db)
    with session_scope(db) as session:
        done = session.get(TrainingRun, first)
        assert (done.state, done.active, done.decision) == ("succeeded", None, "rejected")
        assert session.get(TrainingRun, second).active is True


def test_racing_starts_admit_exactly_one(db: str) -> None:
    # Two beats (or a beat and the API) at the same moment: the unique active flag decides.
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def start() -> None:
        barrier.wait()
        try:
            outcomes.append(_start(db))
        except ActiveRunError:
            outcomes.append("refused")
        except Exception as exc:  # reported below rather than lost in the thread
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("refused") == 3, outcomes
    winner = next(o for o in outcomes if o != "refused")
    with session_scope(db) as session:
        assert active_run(session).id == winner


def test_only_the_latest_delivery_may_report_or_finish(db: str) -> None:
    # A task redelivered while its first copy still runs: the second claim wins, the first copy
    # learns so at its next heartbeat and can no longer finish (or promote) the run.
    run_id = _start(db)
    with session_scope(db) as session:
        first = claim_run(session, run_id).claim
    with session_scope(db) as session:
        second = claim_run(session, run_id).claim
    assert first != second
    with session_scope(db) as session:
        heartbeat(session, run_id, second, step=3)
        with pytest.raises(RunLostError):
            heartbeat(session, run_id, first, step=2)
        assert not finish_run(session, run_id, state=TrainingRunState.SUCCEEDED, claim=first)
        assert finish_run(session, run_id, state=TrainingRunState.SUCCEEDED, claim=second)
        assert session.get(TrainingRun, run_id).step == 3


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
        session.get(ModelVersion, ids[1]).is_serving = True


def test_a_run_without_heartbeat_gives_way(db: str) -> None:
    lost = _start(db)
    with session_scope(db) as session:
        claim_run(session, lost)
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == lost)
            .values(heartbeat_at=utcnow() - timedelta(hours=5))
        )
    fresh = _start(db, stale_after_s=HOUR)
    with session_scope(db) as session:
        old = session.get(TrainingRun, lost)
        assert old.state == TrainingRunState.FAILED and old.active is None
        assert "abandoned" in old.error
        assert active_run(session).id == fresh


def test_only_fully_verified_videos_with_a_subject_are_trained_on(db: str) -> None:
    bucket = f"b-{uuid.uuid4().hex[:8]}"

    class Interval:
        def __init__(self, operation: str, start: int, end: int) -> None:
            self.operation, self.start_frame, self.end_frame = operation, start, end

    intervals = [Interval("Tape", 0, 100), Interval("Pack", 100, 250)]
    with session_scope(db) as session:
        for key, subject, verified in (
            ("U0101/a.mp4", "U0101", True),
            ("U0102/b.mp4", "U0102", False),  # machine pre-labels
            ("c.mp4", None, True),  # no subject: no split
        ):
            replace_video_labels(
                session,
                bucket=bucket,
                video_key=key,
                taxonomy="assignment",
                intervals=intervals,
                subject=subject,
                verified=verified,
            )
        # A human correction on the unverified video does not make the rest of it verified.
        add_correction(
            session,
            bucket=bucket,
            video_key="U0102/b.mp4",
            operation="Wrap",
            start_frame=10,
            end_frame=20,
            taxonomy="assignment",
        )
        videos = labelled_videos(session, taxonomy="assignment", bucket=bucket)
        other_taxonomy = labelled_videos(session, taxonomy="openpack", bucket=bucket)
    assert [(v.key, v.subject, v.segments) for v in videos] == [
        ("U0101/a.mp4", "U0101", [("Tape", 0, 100), ("Pack", 100, 250)])
    ]
    assert other_taxonomy == []


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
        assert (
            serving_version(session, base_model=model, quantization="nf4", taxonomy="assignment").id
            == first_id
        )
        assert rollback(session, first_id).id == base_id
        assert job_model_version(session, _settings(model)).id == base_id
        # The base was never promoted over anything: nothing further back.
        with pytest.raises(RollbackError, match="nothing to roll back to"):
            rollback(session, base_id)


def _outcome(base, candidate, champion, promote_it: bool):  # type: ignore[no-untyped-def]
    from packsight.labels.metrics import Evaluation
    from packsight.models.training_runs import RunOutcome
    from packsight.training.retraining import Decision

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
        claim = claim_run(session, run_id).claim
        # Compared with the champion, which still serves: promoted, evaluations stored.
        decision = complete_run(session, run_id, claim, _outcome(base, first, champion, True))
    assert decision.promote
    with session_scope(db) as session:
        assert session.get(ModelVersion, first.id).is_serving
        assert session.get(ModelVersion, first.id).metrics["test"]["clips"] == 4
        run = session.get(TrainingRun, run_id)
        assert (run.decision, run.step, run.active) == ("promoted", 7, None)
        rollback(session, first.id)  # the operator puts the champion back

    run_id = _start(db)
    with session_scope(db) as session:
        claim = claim_run(session, run_id).claim
        rollback(session, champion.id)  # ... and, while this run evaluates, the base
        session.commit()
        decision = complete_run(session, run_id, claim, _outcome(base, second, champion, True))
    assert not decision.promote and "serving version changed" in decision.reason
    with session_scope(db) as session:
        assert session.get(ModelVersion, base.id).is_serving
        assert not session.get(ModelVersion, second.id).is_serving
        run = session.get(TrainingRun, run_id)
        assert run.decision == "rejected" and run.results["promotion"]["promoted"] is False

    # A delivery that lost its claim records nothing.
    run_id = _start(db)
    with session_scope(db) as session:
        stale = claim_run(session, run_id).claim
        claim_run(session, run_id)
        with pytest.raises(RunLostError):
            complete_run(session, run_id, stale, _outcome(base, second, None, True))
