"""The GPU stage alone, for bench/end_to_end.py: a job's clips once more through the GPU
worker's own code in the bench's process, and where a job's time went against it."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from packsight.models.db import session_scope
from packsight.models.jobs import job_clips
from packsight.models.tables.clips import Clip
from packsight.models.tables.jobs import Job
from packsight.pipeline.context import Context


def gpu_alone(ctx: Context, job_ids: list[str], repeats: int) -> list[dict[str, Any]]:
    """Each job's clips once more through the GPU stage's own code, in this process, with one
    labeler loaded once (as the GPU worker keeps its own); the jobs in turn, `repeats` times,
    so a drift of the machine shows as spread rather than as a difference between jobs."""
    from packsight.models.tables.versions import ModelVersion
    from packsight.pipeline import labelling

    clips = {}
    with session_scope(ctx.settings.resolved_database_url) as session:
        for job_id in job_ids:
            ids = select(job_clips(job_id).subquery().c.id)
            clips[job_id] = list(
                session.scalars(select(Clip).where(Clip.id.in_(ids)).order_by(Clip.id))
            )
        version = session.get_one(ModelVersion, session.get_one(Job, job_ids[0]).model_version_id)
        session.expunge_all()
    labeler = labelling.load_version(version, ctx.settings)  # as the GPU worker loads it
    warm_up = clips[job_ids[0]][: ctx.settings.gpu_batch_size]
    labelling.predict_clips(ctx, warm_up, labeler)
    walls: dict[str, list[float]] = {job_id: [] for job_id in job_ids}
    ok = {}
    for _ in range(repeats):
        for job_id in job_ids:
            _sync()
            started = time.perf_counter()
            outcomes = labelling.predict_clips(ctx, clips[job_id], labeler)
            _sync()
            walls[job_id].append(time.perf_counter() - started)
            ok[job_id] = sum(outcome.error is None for outcome in outcomes)
    return [
        {
            "clips": len(clips[job_id]),
            "ok": ok[job_id],
            "wall_s": walls[job_id],
            # The mean pace over the repeats.
            "clips_per_s": len(clips[job_id]) * repeats / sum(walls[job_id]),
        }
        for job_id in job_ids
    ]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def where(job: dict[str, Any], alone: dict[str, Any]) -> dict[str, float]:
    """Where a job's time went, against the GPU stage alone."""
    return {
        # The CPU stage's pace over the job (the GPU can go no faster than it is fed)...
        "cpu_stage_clips_per_s": job["clips"] / job["last_clip_s"],
        # ...the wait before the first label, and the GPU's work after the last clip.
        "first_label_s": job["first_label_s"],
        "tail_after_last_clip_s": job["last_label_s"] - job["last_clip_s"],
        # The GPU worker's pace from its first label to its last (it shares the host's cores
        # with the CPU workers until the last clip is sampled).
        "gpu_in_pipeline_clips_per_s": job["labelled"]
        / max(job["last_label_s"] - job["first_label_s"], 1e-9),
        # ...while the CPU workers sample, and after the last clip (the cores all its own).
        "gpu_while_sampling_clips_per_s": job["labelled_by_last_clip"]
        / max(job["last_clip_s"] - job["first_label_s"], 1e-9),
        "gpu_after_sampling_clips_per_s": (job["labelled"] - job["labelled_by_last_clip"])
        / max(job["last_label_s"] - job["last_clip_s"], 1e-9),
        # What the job would take at the GPU's own pace, and the rest.
        "gpu_bound_s": job["clips"] / alone["clips_per_s"],
        "beyond_gpu_s": job["wall_s"] - job["clips"] / alone["clips_per_s"],
    }
