"""The real `packsight` command turns bad sources and settings into a clear error, not a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import budget

PACKSIGHT = str(Path(sys.executable).parent / "packsight")


def run(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    command: tuple[str, ...] = (PACKSIGHT,),
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=budget(120),
    )


@pytest.mark.parametrize("name", ["My Videos_2026", "archive", "Été"])
def test_an_ordinary_folder_name_is_a_local_bucket(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    (tmp_path / name / "notes.txt").write_text("no videos")
    result = run(["label", name], tmp_path)
    # The folder was accepted as a bucket; it just holds nothing to label.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no video files" in result.stderr and repr(name) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_folder_name_no_bucket_can_have_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "line\nbreak").mkdir()
    result = run(["label", "line\nbreak"], tmp_path)
    assert result.returncode == 2
    assert "cannot be a bucket" in result.stderr
    assert "control character U+000A" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("source", "needle"),
    [("s3://Bad_Bucket/site-a/", "S3 bucket names are"), ("s3://archive/a\x1bb/", "U+001B")],
)
def test_an_s3_source_follows_s3_rules(tmp_path: Path, source: str, needle: str) -> None:
    result = run(["label", source], tmp_path)
    assert result.returncode == 2 and needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "args", "needle"),
    [
        ({}, [], "set PACKSIGHT_FLOWER_BASIC_AUTH"),
        (
            {"PACKSIGHT_FLOWER_BASIC_AUTH": "admin:REPLACE-with-a-flower-password"},
            [],
            "PACKSIGHT_FLOWER_BASIC_AUTH",
        ),
        ({"PACKSIGHT_FLOWER_BASIC_AUTH": "ops:" + "x" * 24}, [], "set PACKSIGHT_BROKER_URL"),
        (
            {
                "PACKSIGHT_FLOWER_BASIC_AUTH": "ops:" + "x" * 24,
                "PACKSIGHT_BROKER_URL": "redis://127.0.0.1:1/0",
            },
            ["--basic-auth=a:b"],
            "comes from PACKSIGHT_FLOWER_BASIC_AUTH only",
        ),
    ],
)
def test_flower_starts_only_with_real_basic_auth(
    tmp_path: Path, env: dict[str, str], args: list[str], needle: str
) -> None:
    result = run(["flower", *args], tmp_path, env)
    assert result.returncode == 2 and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_with_a_placeholder_secret_is_a_usage_error(tmp_path: Path) -> None:
    env = {"PACKSIGHT_BROKER_URL": "redis://127.0.0.1:1/0", "PACKSIGHT_API_TOKEN": "changeme"}
    result = run(["worker", "--queue", "cpu"], tmp_path, env)
    assert result.returncode == 2 and "PACKSIGHT_API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_first_look_at_an_empty_data_folder_says_so(tmp_path: Path, own_data_dir: Path) -> None:
    """Before anything was labelled: no traceback, the database made, and where it is."""
    results = run(["results"], tmp_path)
    database = own_data_dir / "packsight.db"
    assert results.returncode == 1 and f"no jobs yet in sqlite:///{database}" in results.stderr
    assert "Traceback" not in results.stderr and database.is_file()
    versions = run(["models"], tmp_path)
    assert versions.returncode == 0 and "Traceback" not in versions.stderr, versions.stderr
    shown = run(["info"], tmp_path).stdout
    assert f"data dir:   {own_data_dir}" in shown and "embedded default" in shown


def test_python_m_packsight_is_the_same_command(tmp_path: Path) -> None:
    # Where packages were installed without their scripts (pip --target), the module runs it.
    result = run(["label", "missing-folder"], tmp_path, command=(sys.executable, "-m", "packsight"))
    assert result.returncode == run(["label", "missing-folder"], tmp_path).returncode != 0
    assert "missing-folder" in result.stderr and "Traceback" not in result.stderr
