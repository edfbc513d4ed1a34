"""The embedded default through the real `packsight` command: no servers, a SQLite file, a local
folder and in-process tasks (what scripts/demo.sh runs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import budget

from packsight.labels.taxonomy import load_taxonomy
from packsight.video.decode import split_windows

pytestmark = pytest.mark.e2e
PACKSIGHT = str(Path(sys.executable).parent / "packsight")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PACKSIGHT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=budget(600)
    )


def run_on_a_terminal(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str]:
    """run(), with stderr on a pseudo-terminal 160 columns wide (where progress bars are
    drawn); returns the result and what the terminal showed."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the command exited and closed the terminal
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with subprocess.Popen(
        [PACKSIGHT, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=follower, text=True
    ) as process:
        os.close(follower)
        stdout, _ = process.communicate(timeout=budget(600))
    reader.join(budget(30))
    os.close(leader)
    terminal = b"".join(shown).decode(errors="replace")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, ""), terminal


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


def test_train_on_the_openpack_layout_beats_the_base_model_and_every_baseline(
    tmp_path: Path,
) -> None:
    """An archive in OpenPack's own layout (subject folders, session-named videos, sidecar start
    times, OpenPack's operations), through the real commands on the embedded default: import
    needs no options, `packsight train` scores on the production windows of the test subject,
    and the fine-tuned tiny model beats the base model on all three metrics and every trivial
    baseline on OCA and AA@1 (measured numbers in TINY_RECIPE's notes); it is promoted, and
    labelling the archive with it gives every clip an id of the seed's form, once."""
    from dataclasses import asdict

    from packsight.training.recipes import TINY_RECIPE

    recipe = TINY_RECIPE
    videos = recipe.archive.write(tmp_path / "archive")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env |= {
        "PACKSIGHT_MODEL": str(tmp_path / "model"),
        "PACKSIGHT_FRAME_MAX_SIDE": str(recipe.max_side),
        "PACKSIGHT_TEST_CLIPS": str(recipe.test_clips),
        "PACKSIGHT_TAXONOMY": recipe.archive.taxonomy,
    }
    model = ["tiny-model", "model", "--size", recipe.model_size]
    assert run(model, tmp_path, env).returncode == 0
    imported = run(["labels", "import", "archive"], tmp_path, env)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(videos)} videos into bucket 'archive' as openpack" in imported.stdout

    config = json.dumps(asdict(recipe.training))
    args = ["train", "--config", config, "--results", "results.json"]
    trained, terminal = run_on_a_terminal(args, tmp_path, env)
    assert trained.returncode == 0, trained.stdout + terminal
    # On a terminal the run's progress is drawn as it goes: the videos read, then each step
    # with its loss, ending at the last step.
    assert "reading videos" in terminal and "training, loss" in terminal, terminal[-2000:]
    assert f"{recipe.training.max_steps}/{recipe.training.max_steps} [" in terminal
    assert "openpack taxonomy" in trained.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    base, tuned = results["base_model"], results["finetuned_model"]
    # Every 5-s window of the test subject's videos, as labelling cuts them.
    test_videos = [v for v in videos if v.user == "U0108"]
    windows = sum(len(split_windows(v.frame_count, v.fps)) for v in test_videos)
    assert base["clips"] == tuned["clips"] == windows
    assert results["test_clip_ids"][0] == f"{test_videos[0].user}_{test_videos[0].session}_t0000"
    for metric in ("OCA", "tIoU@0.5", "AA@1"):
        assert tuned[metric] > base[metric], (metric, base, tuned)
    for name, baseline in results["baselines"].items():
        for metric in ("OCA", "AA@1"):
            assert tuned[metric] >= baseline[metric] + 0.05, (name, metric, baseline, tuned)
    assert results["promotion"]["promoted"] and "promoted:" in trained.stdout

    # The next night's run trains too briefly to learn the archive: it does not beat the
    # champion, so it is refused and the champion keeps serving. (That a run is reproducible is
    # checked where a crashed fine-tune resumes to the adapter of an uninterrupted one.)
    brief = json.dumps(asdict(recipe.training) | {"max_steps": 20})
    again = run(["train", "--config", brief], tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "rejected:" in again.stdout and "compared with the champion" in again.stdout
    champion = next(line for line in again.stdout.splitlines() if line.startswith("champion"))
    assert tuned["model"] in champion

    # Labelling the archive with the promoted adapter (at the frames it was trained on, with no
    # frame setting given): one record per window, ids in the seed's form, each once.
    unset = {k: v for k, v in env.items() if k != "PACKSIGHT_FRAME_MAX_SIDE"}
    labelled = run(["label", "archive"], tmp_path, unset)
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr
    records = [json.loads(line) for line in run(["results"], tmp_path, env).stdout.splitlines()]
    assert len(records) == sum(len(split_windows(v.frame_count, v.fps)) for v in videos)
    ids = [r["clip_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"U01\d\d_S\d{4}_t\d{4}", i) for i in ids)
    assert {(r["bucket"], r["video_key"]) for r in records} == {("archive", v.key) for v in videos}

    # Operators see the serving version and can roll it back from the command line too.
    listed = run(["models"], tmp_path, env).stdout.splitlines()
    serving = [line for line in listed if line.startswith("*")]
    assert len(serving) == 1 and tuned["model"] in serving[0]
    assert f"AA@1 {tuned['AA@1']:.3f}" in serving[0]
    version_id = serving[0].split()[1]
    back = run(["models", "rollback", version_id], tmp_path, env)
    assert back.returncode == 0 and "@base:" in back.stdout, back.stderr
    again = run(["models", "rollback", version_id], tmp_path, env)
    assert again.returncode == 1 and "not serving" in again.stderr
