"""`packsight prior` through the real command on the embedded default: a prior learned now from
imported verified labels follows the synthetic archive's procedure, is stored into a model
version and read back from it; no labels and no prior end with one line and exit 1."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_runs import run
from sqlalchemy import select

from packsight.labels.taxonomy import load_taxonomy
from packsight.models.db import session_scope
from packsight.models.jobs import get_or_create_model_version
from packsight.models.migrate import upgrade_database
from packsight.models.tables.clips import Video
from packsight.models.tables.training_runs import TrainingRun
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.context import Context
from packsight.pipeline.priors import stored_prior
from packsight.settings import Settings
from packsight.video.synth import write_synthetic_archive

pytestmark = pytest.mark.e2e

MODEL = "toy/base-model"  # only a name here: nothing is loaded
BASE = f"{MODEL}@base:nf4:assignment"
TUNED = f"{MODEL}@artifact://adapters/tuned:nf4:assignment"


def one_line_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    stderr = result.stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    for word in words:
        assert word in stderr, stderr


def successors_printed(stdout: str) -> dict[str, str]:
    """The table's "most likely next operation" lines: context -> next (seen contexts only)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("most likely next"))
    shown = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        context, _, rest = line.strip().partition("  -> ")
        if not rest.startswith("(never seen)"):
            shown[context.strip()] = rest.rsplit("seen", 1)[0].rsplit(None, 1)[0].strip()
    return shown


def test_learn_store_and_show_a_prior(tmp_path: Path, own_data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_MODEL"] = MODEL

    # Two versions of the configured model: the base (no prior) and a serving adapter.
    url = f"sqlite:///{own_data_dir / 'packsight.db'}"
    upgrade_database(url)
    with session_scope(url) as session:
        for adapter in (None, "artifact://adapters/tuned"):
            get_or_create_model_version(
                session, base_model=MODEL, adapter=adapter, quantization="nf4",
                taxonomy="assignment",
            )  # fmt: skip
        tuned = session.scalars(select(ModelVersion).where(ModelVersion.name == TUNED)).one()
        tuned.is_serving = True
        tuned_id = tuned.id
    # The base model has no prior, and nothing is imported yet: one line each, exit 1. (Both
    # commands only read: they run while the archive is written.)
    with ThreadPoolExecutor(2) as pool:
        no_prior = pool.submit(run, ["prior", "show", "--version", BASE], tmp_path, env)
        no_labels = pool.submit(run, ["prior", "learn", "--bucket", "archive"], tmp_path, env)
        videos = write_synthetic_archive(tmp_path / "archive", videos=14, seed=11, size=(64, 48))
    one_line_failure(no_prior.result(), "has no prior", repr(BASE))
    one_line_failure(no_labels.result(), "no verified assignment labels in bucket 'archive'")

    imported = run(["labels", "import", "archive"], tmp_path, env)
    assert imported.returncode == 0, imported.stderr
    # Two labelled videos are gone from the bucket: one was sampled (its row gives its frame
    # rate and count, the file is not needed), the other is skipped and named.
    sampled, gone = videos[-2:]
    with session_scope(url) as session:
        session.add(
            Video(
                bucket="archive", key=sampled.key, etag="e", size=1, fps=sampled.fps,
                frame_count=sampled.frame_count, width=64, height=48,
                duration_s=sampled.frame_count / sampled.fps,
            )
        )  # fmt: skip
    for video in (sampled, gone):
        video.path.unlink()

    args = ["prior", "learn", "--bucket", "archive", "--version", TUNED, "--png", "prior.png"]
    learned = run(args, tmp_path, env)
    assert learned.returncode == 0, learned.stdout + learned.stderr
    rows = [line for line in learned.stdout.splitlines() if line[:2].strip().isdigit()]
    assert len(rows) == 10  # one matrix row per operation of the taxonomy
    assert f"learned from {len(videos) - 1} videos" in learned.stdout
    assert learned.stderr.startswith(f"skipped archive/{gone.key}: "), learned.stderr
    assert f"into model version 2: {TUNED}; its timelines are smoothed" in learned.stdout
    assert (tmp_path / "prior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each operation's most likely successor is the next step of the procedure the archive's
    # boxes go through (cyclically: a box's Final Check, then the next one's Box Setup).
    steps = load_taxonomy("assignment").procedure
    after = {step: steps[(i + 1) % len(steps)] for i, step in enumerate(steps)}
    shown = successors_printed(learned.stdout)
    seen = {op: nxt for op, nxt in shown.items() if op in after}
    assert len(seen) >= 6, learned.stdout
    assert seen == {op: after[op] for op in seen}, learned.stdout

    # The serving version now has it: `prior show` reads it back by default.
    again = run(["prior", "show"], tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"model version 2: {TUNED} (serving)"
    assert "learned on demand at" in again.stdout and "bucket 'archive'" in again.stdout
    assert successors_printed(again.stdout) == shown

    # A training run's candidate names the run and its training subjects as the source.
    with session_scope(url) as session:
        trained = get_or_create_model_version(
            session, base_model=MODEL, adapter="artifact://runs/r1", quantization="nf4",
            taxonomy="assignment",
        )  # fmt: skip
        stored = session.get_one(ModelVersion, tuned_id).settings or {}
        trained.settings = {"prior": stored["prior"]}
        session.add(
            TrainingRun(
                id="r1", state="succeeded", active=None, trigger="manual", base_model=MODEL,
                quantization="nf4", taxonomy="assignment", candidate_version_id=trained.id,
                params={"splits": {"train": ["U0101", "U0102"]}},
            )
        )  # fmt: skip
        name = trained.name
    found = stored_prior(Context(Settings(database_url=url, model=MODEL)), name)
    assert found.source == "learned by training run r1 from the labels of subjects U0101, U0102"
    assert not found.serving and found.prior.videos == len(videos) - 1
