"""The metrics' own logic: the port setting, a fresh multiprocess directory per worker whose
forked processes are added up, counts recorded only once their transaction commits, state
counts that never fail a scrape nor show a secret, and the labeler reporting its batches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY, values

from packsight.pipeline import metrics, metrics_serving
from packsight.settings import Settings

if TYPE_CHECKING:
    from packsight.vlm.labeler import Labeler


@pytest.mark.parametrize(("given", "port"), [(None, 9100), ("", 0), ("0", 0), ("9250", 9250)])
def test_the_metrics_port_defaults_to_9100_and_empty_turns_it_off(
    given: str | None, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACKSIGHT_METRICS_PORT", raising=False)
    if given is not None:
        monkeypatch.setenv("PACKSIGHT_METRICS_PORT", given)
    assert Settings(_env_file=None).metrics_port == port  # type: ignore[call-arg]


def test_a_port_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("PACKSIGHT_METRICS_PORT", "70000")
    with pytest.raises(ValidationError, match="metrics_port"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_metric_has_labels_so_its_values_are_made_at_first_use() -> None:
    # A worker chooses prometheus_client's multiprocess mode after `packsight` imported the
    # metrics module: only values made later (a labelled metric's, at .labels()) follow it.
    defined = [m for m in vars(metrics).values() if hasattr(m, "_labelnames")]
    assert len(defined) >= 12
    assert all(m._labelnames for m in defined), [m._name for m in defined if not m._labelnames]
    assert all(m._name.startswith("packsight_") and m._documentation for m in defined)


def test_a_worker_gets_a_fresh_directory_and_those_of_gone_processes_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # put back after the test
    monkeypatch.setattr(metrics_serving.atexit, "register", lambda _: None)
    for name in (metrics_serving.MULTIPROC_ENV, metrics_serving.OWNER_ENV):
        monkeypatch.setenv(name, "")  # so that the test's end removes what the code sets
        monkeypatch.delenv(name)
    dead = tmp_path / f"packsight-metrics-{10**8}-old"  # beyond any pid_max: gone
    mine_before = tmp_path / f"packsight-metrics-{os.getpid()}-restart"
    alive = tmp_path / f"packsight-metrics-{os.getppid()}-other"
    for folder in (dead, mine_before, alive):
        folder.mkdir()

    made = metrics_serving.prepare_multiprocess_dir(tmp_path)

    assert made.is_dir() and not any(made.iterdir())
    assert os.environ[metrics_serving.MULTIPROC_ENV] == str(made)
    assert not dead.exists() and not mine_before.exists() and alive.exists()
    # A pool child started afresh (not forked) keeps its parent's directory.
    monkeypatch.setenv(metrics_serving.OWNER_ENV, str(os.getppid()))
    assert metrics_serving.prepare_multiprocess_dir(tmp_path) == made
    monkeypatch.setenv(metrics_serving.OWNER_ENV, str(os.getpid()))
    metrics_serving.remove_multiprocess_dir()
    assert not made.exists()


FORKED_POOL = """
    import os, sys
    from pathlib import Path
    from packsight.pipeline import metrics_serving
    import prometheus_client  # imported first, as the `celery` command does
    metrics_serving.prepare_multiprocess_dir(Path(sys.argv[1]))
    from packsight.pipeline import metrics
    from prometheus_client import generate_latest

    children = []
    for n in (2, 3):
        pid = os.fork()
        if pid == 0:
            metrics.CLIPS_LABELLED.labels("ok").inc(n)
            metrics.delivered("sample", "ok", 0.3)
            metrics.GPU_BATCH_SIZE.labels("cpu").set(n)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    text = generate_latest(metrics_serving.process_collector()).decode()
    for pid in children:
        metrics_serving.process_exited(pid)
    after = generate_latest(metrics_serving.process_collector()).decode()
    print(text, "=====", after)
"""


def test_forked_processes_are_added_up_and_dead_ones_leave_the_live_gauges(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORKED_POOL), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text, after = done.stdout.split("=====")
    assert 'packsight_clips_labelled_total{outcome="ok"} 5.0' in text
    assert 'packsight_stage_duration_seconds_count{kind="sample",outcome="ok"} 2.0' in text
    assert (
        'packsight_stage_duration_seconds_bucket{kind="sample",le="0.5",outcome="ok"} 2.0' in text
    )
    assert "packsight_gpu_batch_size{" in text
    # Counters outlive their processes; a gauge of live processes only does not.
    assert 'packsight_clips_labelled_total{outcome="ok"} 5.0' in after
    assert "packsight_gpu_batch_size{" not in after


def _counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("packsight_clips_labelled_total", {"outcome": outcome}) or 0.0


def test_clips_are_counted_when_their_transaction_commits_only(tmp_path: Path) -> None:
    from sqlalchemy import text

    from packsight.models.db import session_scope

    url = f"sqlite:///{tmp_path / 'counts.db'}"
    ok, failed = _counted("ok"), _counted("failed")
    with pytest.raises(RuntimeError), session_scope(url) as session:
        session.execute(text("SELECT 1"))
        metrics.clips_recorded(session, [True, True])
        raise RuntimeError("the transaction fails: a retry records them again")
    assert (_counted("ok"), _counted("failed")) == (ok, failed)
    with session_scope(url) as session:
        session.execute(text("SELECT 1"))
        metrics.clips_recorded(session, [True, False, True])
    assert (_counted("ok"), _counted("failed")) == (ok + 2, failed + 1)


def test_state_counts_from_an_empty_database_list_every_state(tmp_path: Path) -> None:
    from packsight.models.migrate import upgrade_database

    url = f"sqlite:///{tmp_path / 'states.db'}"
    upgrade_database(url)
    body, content_type = metrics_serving.exposition(url)
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert "packsight_database_up 1.0" in text
    for line in (
        'packsight_jobs{state="succeeded"} 0.0',
        'packsight_job_items{state="decoding"} 0.0',
        'packsight_clips{state="pending"} 0.0',
        'packsight_work_units{kind="label",state="running"} 0.0',
        'packsight_training_runs{state="running"} 0.0',
    ):
        assert line in text


def test_an_unreachable_database_gives_no_counts_and_no_secret() -> None:
    url = "postgresql+psycopg2://packsight:hunter2-not-shown-anywhere@127.0.0.1:1/packsight"
    text = metrics_serving.exposition(url)[0].decode()
    assert "packsight_database_up 0.0" in text
    assert "packsight_jobs{" not in text
    assert "hunter2" not in text and "127.0.0.1" not in text


def test_the_labeler_reports_each_batch_it_runs(labeler: Labeler) -> None:
    from labeler_clips import make_clip

    clips = [make_clip(seed, 60) for seed in range(5)]
    sizes: list[int] = []
    batch_size, labeler.batch_size = labeler.batch_size, 2
    try:
        # Named first: mypy cannot infer a defaulted lambda against predict_stream's type.
        loaders = [lambda clip=clip: clip for clip in clips]
        labeler.predict_stream(loaders, on_batch=sizes.append)
    finally:
        labeler.batch_size = batch_size
    assert sizes == [2, 2, 1]


def test_compose_exposes_the_metrics_port_of_every_worker_and_beat() -> None:
    import yaml

    compose = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
    services = yaml.safe_load(compose.read_text())["services"]
    port = services["api"]["environment"]["PACKSIGHT_METRICS_PORT"]
    assert port == "9100"
    for name in ("worker-cpu", "worker-gpu", "worker-train", "beat"):
        assert services[name]["environment"]["PACKSIGHT_METRICS_PORT"] == port
        assert port in services[name]["expose"], name
