"""The CPU stage's throughput: what a CPU worker does per video, in 1..N worker processes.

Each process takes whole videos, as prefork Celery workers do, and runs the per-video work of
`pipeline/sampling.py` (`_sample`, `_store_clip`) without the database: download from storage,
the motion pass (probe, every frame's motion on a 160x120 grid, 5 s windows, motion-adaptive
picks; `--samplers`: how motion is measured), 8 frames per window at model size, one JPEG frame
pack per clip (`pack_frames`) written to the artifact store. `--decodes`: `one-pass` decodes each
frame once for both (`sample_clips`, as the pipeline does; its motion time is in "decode"),
`two-pass` measures motion (`plan_clips`), then decodes the picks again (`decode_clips`), `nvdec`
is one-pass with the GPU's decoder (PACKSIGHT_DECODE_DEVICE=cuda; not a default). Timed:
clips/s and videos/s (the parent's clock) and, per video, each phase's seconds and CPU seconds.

    PYTHONPATH=src:. python bench/cpu_stage.py              # processes 1,2,4..cores; auto,1,2
    PYTHONPATH=src:. python bench/cpu_stage.py --processes 1 --decord-threads 1 \\
        --seconds 10 --videos-per-process 1                 # smoke run
    PYTHONPATH=src:. python bench/cpu_stage.py --make-videos .whl/cpu-stage-videos  # videos only
    PYTHONPATH=src:. python bench/cpu_stage.py --video-dir .whl/cpu-stage-videos    # any videos

Needs numpy, Pillow, decord, PyAV (boto3 with --s3-endpoint); no celery, SQLAlchemy, pydantic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

from cpu_stage_report import PHASES, print_table  # the script's folder is on the path

from packsight.storage.base import Storage
from packsight.storage.local import LocalStorage
from packsight.video.decode import decode_clips, is_video_key, plan_clips, probe_video
from packsight.video.framepack import pack_frames
from packsight.video.identity import clip_id, clip_prefix, identity_from_key
from packsight.video.onepass import sample_clips
from packsight.video.sampling import SAMPLERS, FrameSettings
from packsight.video.synth import write_synthetic_archive

SOURCE, ARTIFACTS = "videos", "packsight-artifacts"
DECODES = ("one-pass", "two-pass")
FRAMES = FrameSettings()  # what a job gets by default: 8 frames, 5 s, 336 px, 160x120 motion
PLAN = {k: getattr(FRAMES, k) for k in ("frames_per_clip", "clip_seconds", "motion_size")}
_worker: dict[str, Any] = {}  # per process: the storages


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def environment() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    quota = Path("/sys/fs/cgroup/cpu.max")  # a container's CPU limit, if any
    env = {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count()}
    env["usable_cores"] = usable_cores()
    env["cgroup_cpu_max"] = quota.read_text().strip() if quota.exists() else None
    env |= {"python": platform.python_version(), "platform": platform.platform()}
    env |= {name: _version(name) for name in ("decord", "numpy", "pillow", "av", "boto3")}
    return env | {"date": datetime.now(UTC).isoformat(timespec="seconds")}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_videos(folder: Path, args: argparse.Namespace) -> None:
    """Synthetic sessions in OpenPack's layout (`U0101/kinect/S0100.mp4`), all `seconds` long."""
    write_synthetic_archive(
        folder, videos=args.unique_videos, size=args.size, fps=args.fps, min_seconds=args.seconds,
        max_seconds=args.seconds, layout="openpack", preset=args.x264_preset,
    )  # fmt: skip


def video_keys(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if is_video_key(p.name)
    )


def open_storages(spec: dict[str, str]) -> tuple[Storage, Storage]:
    """(the user's videos, the artifact store), as a worker opens them."""
    if spec["kind"] == "s3":
        from packsight.storage.s3 import S3Storage

        s3 = S3Storage(endpoint_url=spec["endpoint"], access_key=None, secret_key=None)
        return s3, s3
    return LocalStorage(Path(spec["source_root"])), LocalStorage(Path(spec["artifact_root"]))


def _init_worker(
    spec: dict[str, str],
    threads: int | None,
    sampler: str = FRAMES.sampler,
    decode: str = DECODES[0],
) -> None:
    _worker["threads"] = threads or 0  # PACKSIGHT_DECODE_THREADS (0: decord's auto)
    _worker["frames"] = FrameSettings(sampler=sampler)
    _worker["decode"] = decode
    _worker["source"], _worker["artifacts"] = open_storages(spec)
    _worker["buckets"] = (spec["source_bucket"], spec["artifact_bucket"])


def sample_one(key: str) -> dict[str, Any]:
    """One video, as `pipeline.sampling._sample` + `_store_clip` do it; seconds per phase."""
    source, artifacts = _worker["source"], _worker["artifacts"]
    bucket, artifact_bucket = _worker["buckets"]
    spent = dict.fromkeys(PHASES, 0.0)
    cpu, wall = time.process_time(), time.perf_counter()

    def timed(phase: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        spent[phase] += time.perf_counter() - start
        return result

    prefix = clip_prefix(key, identity_from_key(key))
    frames = _worker["frames"]
    sampling = hashlib.sha256(frames.key.encode()).hexdigest()[:12]
    records, pack_bytes = [], 0
    with tempfile.TemporaryDirectory(prefix="packsight-") as tmp:
        path = Path(tmp) / PurePosixPath(key).name
        obj = timed("download", lambda: source.download(bucket, key, path))
        threads = _worker["threads"]
        plan = PLAN | {"sampler": frames.sampler, "threads": threads}
        if _worker["decode"] != "two-pass":
            device = "cuda" if _worker["decode"] == "nvdec" else "cpu"
            one = partial(sample_clips, path, max_side=FRAMES.max_side, device=device)
            info, clips = timed("motion", lambda: one(**plan))
        else:
            info, plans = timed("motion", lambda: plan_clips(path, **plan))
            clips = decode_clips(path, info, plans, max_side=FRAMES.max_side, threads=threads)
        while (clip := timed("decode", lambda: next(clips, None))) is not None:
            frames_key = f"frames/{bucket}/{key}/{obj.etag}/{sampling}/{clip.start_frame:09d}.zip"
            meta = {
                "key": key,
                "start_frame": clip.start_frame,
                "frame_indices": list(clip.frame_indices),
            }
            data = timed("pack", lambda: pack_frames(clip.frames, meta=meta))  # noqa: B023
            timed("write", lambda: artifacts.put_bytes(artifact_bucket, frames_key, data))  # noqa: B023
            records.append(clip_id(prefix, clip.start_frame, info.fps))
            pack_bytes += len(data)
    done = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    return done | {"clips": len(records), "phase_s": spent, "pack_bytes": pack_bytes}


def run(spec: dict, keys: list[str], processes: int, threads: int | None, variant: tuple) -> dict:
    """`processes` fork-started workers (as prefork's), each taking whole videos in turn;
    `variant`: (sampler, decode)."""
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, _init_worker, (spec, threads, *variant)) as pool:
        pool.map(time.sleep, [0.2] * processes)  # every worker forked and initialised
        start = time.perf_counter()
        videos = list(pool.imap_unordered(sample_one, keys, chunksize=1))
        wall = time.perf_counter() - start
    clips = sum(v["clips"] for v in videos)
    phase_s = {p: sum(v["phase_s"][p] for v in videos) for p in PHASES}
    cpu_s = sum(v["cpu_s"] for v in videos)
    result: dict[str, Any] = {"decord_threads": threads or "auto", "processes": processes}
    result["sampler"], result["decode"] = variant
    result |= {"videos": len(videos), "clips": clips, "wall_s": wall, "clips_per_s": clips / wall}
    result |= {"videos_per_s": len(videos) / wall, "cpu_s_per_clip": cpu_s / clips}
    # Per core busy: the processes, or all cores when there are more processes than cores.
    result["clips_per_s_per_core"] = clips / wall / min(processes, usable_cores())
    result["cpu_utilisation"] = cpu_s / (wall * usable_cores())  # of the whole machine
    result["phase_s_per_clip"] = {p: s / clips for p, s in phase_s.items()}
    result["phase_share"] = {p: s / sum(phase_s.values()) for p, s in phase_s.items()}
    return result | {"video_wall_s": sorted(round(v["wall_s"], 3) for v in videos)}


def _default_processes() -> str:
    cores = usable_cores()  # 1, 2, 4, ... and all of them
    return ",".join(str(n) for n in [*(2**i for i in range(8) if 2**i < cores), cores])


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default=_default_processes(), help="e.g. 1,2,4")
    parser.add_argument("--decord-threads", default="auto,1,2", help="auto (decord's 0) or N")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="how motion is measured")
    parser.add_argument("--decodes", default=",".join(DECODES), help="one-pass, two-pass, nvdec")
    parser.add_argument("--videos-per-process", type=int, default=3, help="tasks per run")
    parser.add_argument("--unique-videos", type=int, default=2, help="distinct synthetic videos")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each video")
    parser.add_argument("--size", default="1280x720", help="synthetic frame size WxH")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--x264-preset", default="ultrafast", help="synthetic videos' encoding")
    parser.add_argument("--video-dir", type=Path, help="use these videos (any layout)")
    parser.add_argument("--make-videos", type=Path, help="only write the synthetic videos here")
    parser.add_argument("--work-dir", type=Path, help="default: a fresh temporary folder")
    parser.add_argument("--s3-endpoint", help="use this S3 server (AWS_* credentials)")
    parser.add_argument("--s3-bucket", default="packsight-bench", help="with --s3-endpoint")
    date = datetime.now(UTC).date().isoformat()
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    default_out = Path("docs/results") / f"cpu_stage_{host}_{date}.json"
    parser.add_argument("--out", type=Path, default=default_out)
    return parser.parse_args()


def _describe(folder: Path, keys: list[str]) -> dict[str, Any]:
    info = probe_video(folder / keys[0])
    size = sum((folder / k).stat().st_size for k in keys) / len(keys)
    shape = {"width": info.width, "height": info.height, "fps": info.fps}
    return shape | {
        "keys": keys,
        "frames": info.frame_count,
        "seconds": info.duration_s,
        "bytes": size,
        "mbit_per_s": size * 8 / info.duration_s / 1e6,
        "frame_settings": FRAMES.key,
    }


def _storage_spec(args: argparse.Namespace, work: Path, folder: Path, keys: list[str]) -> dict:
    if not args.s3_endpoint:
        (work / "artifacts" / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        spec = {"kind": "local", "source_root": str(folder.parent), "source_bucket": folder.name}
        return spec | {"artifact_root": str(work / "artifacts"), "artifact_bucket": ARTIFACTS}
    spec = {"kind": "s3", "endpoint": args.s3_endpoint}
    spec |= {"source_bucket": args.s3_bucket, "artifact_bucket": args.s3_bucket}
    s3, _ = open_storages(spec)
    s3.ensure_bucket(args.s3_bucket)
    for key in keys:  # not timed: the videos are in the bucket before a job starts
        s3.put_bytes(args.s3_bucket, key, (folder / key).read_bytes())
    return spec


def main() -> None:
    args = _parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.make_videos:
        make_videos(args.make_videos, args)
        print(f"wrote {len(video_keys(args.make_videos))} videos to {args.make_videos}")
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="packsight-cpu-stage-"))
    folder = args.video_dir.resolve() if args.video_dir else work / SOURCE
    if not args.video_dir and not video_keys(folder):
        started = time.perf_counter()
        make_videos(folder, args)
        print(f"wrote synthetic videos in {time.perf_counter() - started:.0f} s", flush=True)
    keys = video_keys(folder)
    if not keys:
        sys.exit(f"no videos under {folder}")
    spec = _storage_spec(args, work, folder, keys)
    _init_worker(spec, None)
    warm = sample_one(keys[0])  # warm-up (page cache, decord's first open), not counted
    video = _describe(folder, keys) | {"clips": warm["clips"], "warmup": warm}
    video["pack_kb"] = warm["pack_bytes"] / warm["clips"] / 1000
    if args.video_dir is None:
        video["source"] = {"generator": "packsight.video.synth", "layout": "openpack", "seed": 42}
    report: dict[str, Any] = {"env": environment(), "video": video, "storage": spec["kind"]}
    report |= {"command": sys.argv[1:], "results": []}
    runs = [
        ((sampler, decode), None if threads == "auto" else int(threads), int(processes))
        for threads in args.decord_threads.split(",")
        for processes in args.processes.split(",")
        for sampler in args.samplers.split(",")  # innermost: compared on one machine state
        for decode in args.decodes.split(",")
    ]
    first: dict[tuple, float] = {}
    for variant, threads, processes in runs:
        tasks = [keys[i % len(keys)] for i in range(processes * args.videos_per_process)]
        result = run(spec, tasks, processes, threads, variant)
        pace = first.setdefault((threads, processes), result["clips_per_s"])
        result["ratio_to_first_variant"] = result["clips_per_s"] / pace
        report["results"].append(result)
        print(
            f"{' '.join(variant)}, decode threads {result['decord_threads']}, "
            f"{processes} processes: {result['clips_per_s']:.2f} clips/s",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {args.out}")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
