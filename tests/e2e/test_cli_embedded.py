"""The embedded default through the real `packsight` command: no servers, a SQLite file, a local
folder and in-process tasks (what scripts/demo.sh runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_runs import run
from openpack_round_trip import assert_openpack_round_trip

from packsight.labels.taxonomy import load_taxonomy
from packsight.video.decode import split_windows

pytestmark = pytest.mark.e2e


def test_label_a_local_folder_on_the_embedded_default(
    tmp_path: Path, tiny_model_dir: Path, own_data_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_MODEL"] = str(tiny_model_dir)

    synth = run(["synth", "archive", "--videos", "2", "--seed", "3"], tmp_path, env)
    assert synth.returncode == 0, synth.stderr
    manifest = json.loads((tmp_path / "archive" / "manifest.json").read_text())
    expected = sum(len(split_windows(v["frame_count"], v["fps"], 5.0)) for v in manifest["videos"])

    labelled = run(["label", "archive"], tmp_path, env)
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr
    # The state is in the per-user data folder, and the command says where.
    database = own_data_dir / "packsight.db"
    assert f"embedded mode: sqlite:///{database}" in labelled.stdout
    assert f"{expected} clips, {expected} labelled, 0 failed" in labelled.stdout
    assert database.is_file() and not (tmp_path / ".packsight").exists()
    shown = run(["info", "--data-dir"], tmp_path, env)
    assert shown.returncode == 0 and shown.stdout.strip() == str(own_data_dir)

    # Whatever the directory the next command runs in, it sees the same job.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    results = run(["results", "--format", "jsonl"], elsewhere, env)
    assert results.returncode == 0, results.stderr
    records = [json.loads(line) for line in results.stdout.splitlines()]
    assert len(records) == expected
    operations = load_taxonomy("assignment").operations
    for record in records:
        assert list(record)[:5] == [
            "clip_id", "dominant_operation", "temporal_segment",
            "anticipated_next_operation", "confidence",
        ]  # the seed's five fields first, then where the clip is  # fmt: skip
        assert record["bucket"] == "archive" and record["video_key"].endswith(".mp4")
        assert record["end_frame"] >= record["start_frame"] and record["end_s"] > record["start_s"]
        assert record["dominant_operation"] in operations
        assert record["anticipated_next_operation"] in operations
        segment = record["temporal_segment"]
        assert 0 <= segment["start_frame"] <= segment["end_frame"]
        assert 0 < record["confidence"] <= 1

    # The job's timelines as OpenPack annotations, imported back as the very same segments.
    assert_openpack_round_trip(elsewhere, env, database)


def test_a_bad_file_fails_alone_and_sets_the_exit_code(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_MODEL"] = str(tiny_model_dir)
    assert run(["synth", "archive", "--videos", "1"], tmp_path, env).returncode == 0
    (tmp_path / "archive" / "broken.mp4").write_bytes(b"")

    labelled = run(["label", "archive"], tmp_path, env)
    assert labelled.returncode == 1
    assert "partially_failed" in labelled.stdout
    broken = next(line for line in labelled.stdout.splitlines() if "broken.mp4" in line)
    assert "failed" in broken and "empty" in broken

    missing = run(["label", "no-such-folder"], tmp_path, env)
    assert missing.returncode == 2 and "not a folder" in missing.stderr


def test_bad_settings_are_a_clear_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_FRAMES_PER_CLIP"] = "7"
    result = run(["results"], tmp_path, env)
    assert result.returncode == 2
    assert "PACKSIGHT_FRAMES_PER_CLIP" in result.stderr and "even" in result.stderr
    assert "Traceback" not in result.stderr
