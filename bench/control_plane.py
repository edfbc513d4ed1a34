"""What the control plane can carry, beside the GPUs: how many label units per second Postgres
records (the GPU stage's own transaction: finish the unit, upsert its predictions, settle the
item and job) with 1..N concurrent writers, how many sampled videos per second it records (the
CPU stage's: the video, its clips, the item moved on, its label units), and how many unit
messages per second one real Celery worker moves through Redis (publish, deliver, the lease
lookup that drops a message whose unit is done).

    .venv/bin/python bench/control_plane.py [--videos 400] [--clips 12] [--writers 1,2,4,8]

The database is a fresh one on the Postgres at :5432 (or a private cluster with --private);
Redis is a private redis-server. Writes docs/results/control_plane_<date>.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the real services

import harness  # noqa: E402
from sqlalchemy import select  # noqa: E402

from packsight.models.db import session_scope  # noqa: E402
from packsight.models.jobs import add_items, get_or_create_model_version, set_item_state  # noqa: E402
from packsight.models.migrate import upgrade_database  # noqa: E402
from packsight.models.predictions import ClipOutcome, upsert_clips, upsert_video  # noqa: E402
from packsight.models.tables.base import utcnow  # noqa: E402
from packsight.models.tables.jobs import ItemState, Job, JobItem  # noqa: E402
from packsight.models.tables.work import UnitKind, WorkUnit  # noqa: E402
from packsight.models.work import add_units, claim_unit, finish_unit  # noqa: E402
from packsight.pipeline import labelling  # noqa: E402

ANSWER = {"dominant_operation": "Picking", "anticipated_next_operation": "Packing"}


def make_job(db: str, videos: int) -> tuple[str, int, list[int]]:
    """A job of `videos` items on one model version (no clips yet)."""
    with session_scope(db) as session:
        version = get_or_create_model_version(
            session, base_model="bench/model", adapter=None, quantization="nf4", taxonomy="openpack"
        )
        job = Job(bucket="bench", prefix="", model_version_id=version.id, params={}, listed=True)
        session.add(job)
        session.flush()
        items = add_items(
            session, job_id=job.id, keys=[f"U0101/S{n:04d}.mp4" for n in range(videos)]
        )
        return job.id, version.id, items


def record_sampled(db: str, job_id: str, item_id: int, n: int, clips: int) -> None:
    """The CPU stage's outcome transaction for one video (as pipeline/sampling.py records it),
    after the claim of its unit."""
    token = secrets.token_hex(16)
    with session_scope(db) as session:
        sample = session.scalars(
            select(WorkUnit.id).where(WorkUnit.item_id == item_id, WorkUnit.kind == UnitKind.SAMPLE)
        ).one()
        assert claim_unit(session, sample, lease=token, stale_before=utcnow()) is not None
    with session_scope(db) as session:
        finish_unit(session, sample, token)
        video = upsert_video(
            session,
            {
                "bucket": "bench",
                "key": f"U0101/S{n:04d}.mp4",
                "etag": secrets.token_hex(8),
                "size": 1,
                "fps": 25.0,
                "frame_count": 125 * clips,
                "width": 1280,
                "height": 720,
                "duration_s": 5.0 * clips,
                "clip_prefix": f"U0101_S{n:04d}",
            },
        )
        rows = upsert_clips(
            session,
            video_id=video.id,
            sampling="bench",
            clips=[
                {
                    "clip_key": f"U0101_S{n:04d}_t{5 * c}",
                    "index": c,
                    "start_frame": 125 * c,
                    "end_frame": 125 * (c + 1),
                    "frame_indices": list(range(0, 125, 16)),
                    "frames_uri": f"artifacts/frames/{n}/{c}.zip",
                }
                for c in range(clips)
            ],
        )
        set_item_state(
            session,
            item_id=item_id,
            state=ItemState.INFERRING,
            video_id=video.id,
            sampling="bench",
            clip_count=len(rows),
        )
        add_units(
            session,
            UnitKind.LABEL,
            [{"job_id": job_id, "item_id": item_id, "payload": {"clip_ids": [r.id for r in rows]}}],
        )


def record_labels(db: str, unit_id: int) -> int:
    """The GPU stage's outcome transaction for one unit (labelling.record_unit), after its
    claim and the read of its clips; returns the clips recorded."""
    token = secrets.token_hex(16)
    with session_scope(db) as session:
        unit = claim_unit(session, unit_id, lease=token, stale_before=utcnow())
    assert unit is not None
    with session_scope(db) as session:
        batch = labelling.read_unit(session, unit)
    assert batch is not None
    outcomes = [
        ClipOutcome(
            clip_id=clip.id,
            start_frame=0,
            end_frame=125,
            confidence=0.9,
            **ANSWER,
            raw_output="{}",
            operation_probabilities=[0.9, 0.1],
            next_probabilities=[0.8, 0.2],
        )
        for clip in batch.clips
    ]
    with session_scope(db) as session:
        labelling.record_unit(session, batch=batch, outcomes=outcomes, token=token)
    return len(outcomes)


def in_threads(work: list[Any], writers: int, fn: Any) -> tuple[float, list[Any]]:
    """Run fn over `work` with `writers` threads (each its own connections); wall seconds."""
    results: list[Any] = []
    lock, todo = threading.Lock(), list(reversed(work))

    def loop() -> None:
        while True:
            with lock:
                if not todo:
                    return
                job = todo.pop()
            out = fn(job)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=loop) for _ in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, results


def database_rates(db: str, videos: int, clips: int, writers: list[int]) -> list[dict]:
    runs = []
    for count in writers:
        job_id, _, items = make_job(db, videos)
        wall, _ = in_threads(
            list(enumerate(items)),
            count,
            lambda pair, j=job_id: record_sampled(db, j, pair[1], pair[0], clips),
        )
        with session_scope(db) as session:
            units = list(
                session.scalars(
                    select(WorkUnit.id).where(
                        WorkUnit.job_id == job_id, WorkUnit.kind == UnitKind.LABEL
                    )
                )
            )
        label_wall, recorded = in_threads(units, count, lambda unit_id: record_labels(db, unit_id))
        with session_scope(db) as session:
            state = session.get_one(Job, job_id).state
            open_items = session.scalars(
                select(JobItem.id).where(
                    JobItem.job_id == job_id, JobItem.state == ItemState.INFERRING
                )
            ).all()
        assert state == "succeeded" and not open_items, (state, len(open_items))
        runs.append(
            {
                "writers": count,
                "videos": videos,
                "clips_per_video": clips,
                "sampled_videos_per_s": videos / wall,
                "label_units_per_s": len(units) / label_wall,
                "label_clips_per_s": sum(recorded) / label_wall,
                "label_ms_per_unit": 1000 * label_wall / len(units) * count,
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    return runs


def broker_rate(db: str, messages: int, logs: Path) -> dict:
    """One GPU worker (pool solo) drains `messages` label messages whose units are done: the
    whole per-message path (Redis, Celery, the task, the lease lookup), no GPU work."""
    from packsight.settings import Settings
    from packsight.workers.broker import publisher_for

    with harness.redis_server() as redis:
        env = dict(os.environ) | {
            "PACKSIGHT_DATABASE_URL": db,
            "PACKSIGHT_BROKER_URL": redis.url,
            "PACKSIGHT_METRICS_PORT": "0",
            "PACKSIGHT_TRAINING_SCHEDULE": "",
        }
        settings = Settings(database_url=db, broker_url=redis.url)
        publisher = publisher_for(settings)
        assert publisher is not None
        started = time.perf_counter()
        for n in range(messages):
            publisher.publish(UnitKind.LABEL, 10**9 + n)  # no such unit: done long ago
        publish_s = time.perf_counter() - started
        celery = [str(Path(sys.executable).parent / "celery"), "-A", "packsight.workers.app"]
        argv = [*celery, "worker", "-Q", settings.queue_gpu, "--pool", "solo", "-l", "WARNING"]
        worker = harness.ProcessGroup("worker-gpu", argv, log_path=logs / "worker.log", env=env)
        try:
            worker.wait_until(
                lambda: publisher.queue_length(UnitKind.LABEL) < messages, what="consuming"
            )
            first, left = time.perf_counter(), publisher.queue_length(UnitKind.LABEL)
            worker.wait_until(
                lambda: publisher.queue_length(UnitKind.LABEL) == 0,
                what="drained",
                timeout_s=harness.budget(600),
            )
            drain_s = time.perf_counter() - first
        finally:
            worker.stop()
    result = {
        "messages": messages,
        "published_per_s": messages / publish_s,
        "delivered_per_s": left / drain_s,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--clips", type=int, default=12, help="clips per video (12: a minute)")
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--private", action="store_true", help="a private Postgres cluster")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or ROOT / f"docs/results/control_plane_{datetime.now(UTC):%Y-%m-%d}.json"
    with (
        harness.postgres_database(private=args.private) as database,
        tempfile.TemporaryDirectory() as logs,
    ):
        upgrade_database(database.url)
        result: dict[str, Any] = {
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "date": datetime.now(UTC).isoformat(),
            },
            "database": database_rates(
                database.url, args.videos, args.clips, [int(w) for w in args.writers.split(",")]
            ),
            "broker": broker_rate(database.url, args.messages, Path(logs)),
        }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
