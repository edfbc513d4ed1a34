"""The pipeline's bookkeeping on real Postgres, tasks run in-process: redelivered tasks change
nothing, attempt caps end items instead of looping, a good label is never overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.jobs import register_attempt
from packsight.models.predictions import ClipOutcome, upsert_predictions
from packsight.models.tables import Clip, Job, JobItem, Prediction
from packsight.settings import Settings, get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    """Fresh files per test: labels already made for a video would otherwise be reused."""
    from packsight.synth import write_synthetic_archive

    root = tmp_path / "local-root"
    write_synthetic_archive(root / "videos", videos=2, seed=7, min_seconds=6, max_seconds=11)
    return root


@pytest.fixture
def settings(
    postgres_url: str, tiny_model_dir: Path, archive_root: Path, tmp_path: Path, monkeypatch
) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    from packsight.models.migrate import upgrade_database
    from packsight.workers.app import app, configure

    env = {
        "PACKSIGHT_DATABASE_URL": postgres_url,
        "PACKSIGHT_STORAGE": "local",
        "PACKSIGHT_LOCAL_ROOT": str(archive_root),
        "PACKSIGHT_DATA_DIR": str(tmp_path),
        "PACKSIGHT_MODEL": str(tiny_model_dir),
        "PACKSIGHT_QUANTIZATION": "none",
        "PACKSIGHT_MAX_ATTEMPTS": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PACKSIGHT_BROKER_URL", raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    configure(app, settings)  # no broker: tasks run in-process
    upgrade_database(postgres_url)
    yield settings
    get_settings.cache_clear()


def submit(settings: Settings) -> tuple[str, list[int]]:
    from packsight.workers.submit import create_labelling_job

    submission = create_labelling_job(settings, bucket="videos", prefix="")
    return submission.job_id, submission.item_ids


def prediction_rows(settings: Settings, job_id: str) -> list[tuple[int, str]]:
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        videos = select(JobItem.video_id).where(JobItem.job_id == job_id)
        return list(
            session.execute(
                select(Prediction.clip_id, Prediction.status)
                .join(Clip, Clip.id == Prediction.clip_id)
                .where(
                    Clip.video_id.in_(videos), Prediction.model_version_id == job.model_version_id
                )
                .order_by(Prediction.clip_id)
            ).all()
        )


def job_state(settings: Settings, job_id: str) -> tuple[str, dict[str, str]]:
    with session_scope(settings.resolved_database_url) as session:
        items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)).all()
        return session.get(Job, job_id).state, {i.key: i.state for i in items}


def test_redelivered_tasks_change_nothing(settings: Settings) -> None:
    from packsight.workers.submit import enqueue_items
    from packsight.workers.tasks.label import run_labelling
    from packsight.workers.tasks.sample import run_sampling

    job_id, item_ids = submit(settings)
    enqueue_items(item_ids)
    assert job_state(settings, job_id)[0] == "succeeded"
    before = prediction_rows(settings, job_id)
    assert before and all(status == "ok" for _, status in before)

    # A second delivery of every message, as after a lost ack.
    for item_id in item_ids:
        run_sampling(item_id=item_id, task_id=f"again-{item_id}", settings=settings)
        with session_scope(settings.resolved_database_url) as session:
            item = session.get(JobItem, item_id)
            clip_ids = list(session.scalars(select(Clip.id).where(Clip.video_id == item.video_id)))
        run_labelling(item_id=item_id, clip_ids=clip_ids, task_id="again", settings=settings)

    assert prediction_rows(settings, job_id) == before
    assert job_state(settings, job_id)[0] == "succeeded"


def test_sampling_gives_up_after_the_attempt_cap(settings: Settings) -> None:
    from packsight.workers.tasks.sample import run_sampling

    _, item_ids = submit(settings)
    # The message was delivered (and its worker killed) max_attempts times already.
    with session_scope(settings.resolved_database_url) as session:
        for _ in range(settings.max_attempts):
            register_attempt(session, task_id="sample:doomed")
    run_sampling(item_id=item_ids[0], task_id="doomed", settings=settings)
    with session_scope(settings.resolved_database_url) as session:
        item = session.get(JobItem, item_ids[0])
        assert item.state == "failed"
        assert "gave up after 2 attempts" in item.error


def test_labelling_gives_up_after_the_attempt_cap(settings: Settings) -> None:
    from packsight.workers.tasks.label import run_labelling
    from packsight.workers.tasks.sample import run_sampling

    _, item_ids = submit(settings)
    item_id = item_ids[0]
    # Sample without running the GPU stage, then pretend its batch crashed the worker twice.
    batches = run_sampling(item_id=item_id, task_id="sample-only", settings=settings)
    assert sum(map(len, batches)) >= 1
    with session_scope(settings.resolved_database_url) as session:
        item = session.get(JobItem, item_id)
        assert item.state == "inferring"
        clip_ids = list(session.scalars(select(Clip.id).where(Clip.video_id == item.video_id)))
        for _ in range(settings.max_attempts):
            register_attempt(session, task_id="label:crashy")
    run_labelling(item_id=item_id, clip_ids=clip_ids, task_id="crashy", settings=settings)
    with session_scope(settings.resolved_database_url) as session:
        item = session.get(JobItem, item_id)
        assert item.state == "failed"
        assert f"{len(clip_ids)} of {len(clip_ids)} clips" in item.error
        errors = session.scalars(
            select(Prediction.error).where(Prediction.clip_id.in_(clip_ids))
        ).all()
        assert len(errors) == len(clip_ids)
        assert all("gave up after 2 attempts" in e for e in errors)


def test_a_label_is_never_replaced_by_an_error(settings: Settings) -> None:
    from packsight.workers.submit import enqueue_items

    job_id, item_ids = submit(settings)
    enqueue_items(item_ids)
    clip_id, _ = prediction_rows(settings, job_id)[0]
    with session_scope(settings.resolved_database_url) as session:
        version = session.get(Job, job_id).model_version_id
        upsert_predictions(
            session,
            model_version_id=version,
            outcomes=[ClipOutcome(clip_id=clip_id, error="late duplicate that failed")],
        )
    with session_scope(settings.resolved_database_url) as session:
        row = session.scalars(
            select(Prediction).where(
                Prediction.clip_id == clip_id, Prediction.model_version_id == version
            )
        ).one()
        assert row.status == "ok" and row.error is None
        count = session.scalar(select(func.count()).where(Prediction.clip_id == clip_id))
        assert count == 1
