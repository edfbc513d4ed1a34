"""Training-run bookkeeping on real Postgres: one active run at a time (even when two processes
race), only the latest delivery may report or finish, stale runs give way, and only verified
labels are trained on."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from manual_runs import HOUR, _start
from sqlalchemy import update

from packsight.models.db import session_scope
from packsight.models.labels import add_correction, replace_video_labels
from packsight.models.tables.base import utcnow
from packsight.models.tables.training_runs import TrainingRun, TrainingRunState
from packsight.models.training_runs import (
    ActiveRunError,
    RunLostError,
    active_run,
    claim_run,
    finish_run,
    heartbeat,
    labelled_videos,
)

pytestmark = pytest.mark.integration


def test_one_active_run_until_it_finishes(db: str) -> None:
    first = _start(db)
    with pytest.raises(ActiveRunError) as refused:
        _start(db)
    assert refused.value.run_id == first
    with session_scope(db) as session:
        claimed = claim_run(session, first)
        assert claimed is not None and claimed.state == TrainingRunState.RUNNING
        assert finish_run(session, first, state=TrainingRunState.SUCCEEDED, decision="rejected")
        # A second finish (a redelivered task) changes nothing.
        assert not finish_run(session, first, state=TrainingRunState.FAILED, error="late")
        assert claim_run(session, first) is None
    second = _start(db)
    with session_scope(db) as session:
        done = session.get(TrainingRun, first)
        assert done is not None
        assert (done.state, done.active, done.decision) == ("succeeded", None, "rejected")
        new = session.get(TrainingRun, second)
        assert new is not None and new.active is True


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
        active = active_run(session)
        assert active is not None and active.id == winner


def test_only_the_latest_delivery_may_report_or_finish(db: str) -> None:
    # A task redelivered while its first copy still runs: the second claim wins, the first copy
    # learns so at its next heartbeat and can no longer finish (or promote) the run.
    run_id = _start(db)
    with session_scope(db) as session:
        first_run = claim_run(session, run_id)
        assert first_run is not None and first_run.claim is not None
        first = first_run.claim
    with session_scope(db) as session:
        second_run = claim_run(session, run_id)
        assert second_run is not None and second_run.claim is not None
        second = second_run.claim
    assert first != second
    with session_scope(db) as session:
        heartbeat(session, run_id, second, step=3)
        with pytest.raises(RunLostError):
            heartbeat(session, run_id, first, step=2)
        assert not finish_run(session, run_id, state=TrainingRunState.SUCCEEDED, claim=first)
        assert finish_run(session, run_id, state=TrainingRunState.SUCCEEDED, claim=second)
        run = session.get(TrainingRun, run_id)
        assert run is not None and run.step == 3


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
        assert old is not None
        assert old.state == TrainingRunState.FAILED and old.active is None
        assert old.error is not None and "abandoned" in old.error
        active = active_run(session)
        assert active is not None and active.id == fresh


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
