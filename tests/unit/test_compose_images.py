"""The images and the volumes they write: a non-root user owning its data and model paths,
named volumes on those paths, the database password quoted into the URL, the tested torch."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from compose_tools import (
    ROOT,
    URL_UNSAFE,
    real_env,
    resolved,
)

from packsight.settings import Settings


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    text = (ROOT / "compose" / name).read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0], line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions(name):
        if instruction == "ENV":
            env |= dict(word.split("=", 1) for word in shlex.split(args))
    return env


@pytest.mark.parametrize(
    ("dockerfile", "paths"),
    [("Dockerfile", ["/app/.packsight"]), ("Dockerfile.gpu", ["/app/.packsight", "/models"])],
)
def test_images_run_as_a_user_who_owns_the_data_and_model_paths(
    dockerfile: str, paths: list[str]
) -> None:
    instructions = dockerfile_instructions(dockerfile)
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith("0:")
    user = users[-1]
    commands = [
        shlex.split(part)
        for instruction, args in instructions
        if instruction == "RUN"
        for part in args.split("&&")
    ]
    assert any(c[0] == "useradd" and c[-1] == user for c in commands)
    made = {path for c in commands if c[:2] == ["mkdir", "-p"] for path in c[2:]}
    owned = {path for c in commands if c[:2] == ["chown", f"{user}:{user}"] for path in c[2:]}
    env = dockerfile_env(dockerfile)
    assert env["PACKSIGHT_DATA_DIR"] == "/app/.packsight"
    wanted = set(paths) | ({env["HF_HOME"]} if "HF_HOME" in env else set())
    for path in wanted:
        # mkdir -p makes the parents too
        assert any(m == path or m.startswith(f"{path}/") for m in made), f"{path} not made"
        assert path in owned, f"{path} not owned by {user}"
    if dockerfile == "Dockerfile.gpu":
        assert env["HF_HOME"].startswith("/models/")


def test_stateful_services_mount_named_volumes_on_the_images_paths(
    compose_binary: Path, tmp_path: Path
) -> None:
    config = resolved(compose_binary, tmp_path, real_env())
    data_dir = dockerfile_env("Dockerfile")["PACKSIGHT_DATA_DIR"]
    assert dockerfile_env("Dockerfile.gpu")["PACKSIGHT_DATA_DIR"] == data_dir
    wanted = {"worker-gpu": {data_dir, "/models"}, "worker-train": {data_dir, "/models"}}
    wanted["beat"] = {data_dir}
    data_volumes = []
    for name, targets in wanted.items():
        service = config["services"][name]
        assert service["environment"]["PACKSIGHT_DATA_DIR"] == data_dir
        mounts = {v["target"]: v for v in service["volumes"]}
        for target in targets:
            assert mounts[target]["type"] == "volume", f"{name}: {target}"
            assert mounts[target]["source"] in config["volumes"]
        data_volumes.append(mounts[data_dir]["source"])
    # One data volume per service: the adapter cache and the work folders are not shared.
    assert len(set(data_volumes)) == len(data_volumes)


def test_the_database_password_reaches_the_url_quoted(
    compose_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine import make_url

    env = real_env()
    assert all(c in env["POSTGRES_PASSWORD"] for c in URL_UNSAFE)
    app_env = resolved(compose_binary, tmp_path, env)["services"]["worker-cpu"]["environment"]
    assert make_url(app_env["PACKSIGHT_DATABASE_URL"]).password is None
    for name in list(os.environ):
        if name.startswith("PACKSIGHT_"):
            monkeypatch.delenv(name)
    for name, value in app_env.items():
        monkeypatch.setenv(name, value)
    url = make_url(Settings(_env_file=None).resolved_database_url)  # type: ignore[call-arg]
    assert url.password == env["POSTGRES_PASSWORD"]
    assert (url.username, url.host, url.port, url.database) == (
        "packsight", "postgres", 5432, "packsight",
    )  # fmt: skip


def test_compose_env_is_ignored_by_git() -> None:
    def ignored(path: str) -> bool:
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert done.returncode in (0, 1), f"git check-ignore failed on {path}"
        return done.returncode == 0

    assert ignored("compose/.env")
    assert not ignored("compose/.env.example")


def test_the_gpu_image_installs_the_tested_torch_build() -> None:
    install = (ROOT / "scripts" / "install.sh").read_text()
    pins = re.search(r"^TORCH_PINS=\(([^)]*)\)", install, re.M).group(1).split()  # type: ignore[union-attr]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(pins) <= set(project["project"]["optional-dependencies"]["vlm"])
    assert sorted(pins) == ["torch==2.14.1", "torchvision==0.29.1"]
    instructions = dockerfile_instructions("Dockerfile.gpu")
    (base,) = [args for instruction, args in instructions if instruction == "FROM"]
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu24\.04", base)
    torch_installs = [
        shlex.split(args)
        for instruction, args in instructions
        if instruction == "RUN" and "torch==" in args
    ]
    assert torch_installs == [
        ["pip", "install", "--index-url", "https://download.pytorch.org/whl/cu130", *pins]
    ]
