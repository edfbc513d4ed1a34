"""Docker cannot run here, so the compose file is checked against the code it deploys."""

import re
from pathlib import Path

import pytest
import yaml

from packsight.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_services_are_the_production_set(compose: dict) -> None:
    # check-env: the one-shot placeholder check every other service waits for.
    assert set(compose["services"]) == {
        "check-env", "postgres", "redis", "minio", "minio-init", "migrate", "api",
        "worker-cpu", "worker-gpu", "worker-train", "beat", "flower",
    }  # fmt: skip


def test_every_packsight_variable_is_a_setting(compose: dict) -> None:
    fields = set(Settings.model_fields)
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for var in env:
            if var.startswith("PACKSIGHT_"):
                assert var.removeprefix("PACKSIGHT_").lower() in fields, f"{name}: {var}"


def test_app_services_share_one_configuration(compose: dict) -> None:
    app_services = ["migrate", "api", "worker-cpu", "worker-gpu", "worker-train", "beat", "flower"]
    envs = [compose["services"][name]["environment"] for name in app_services]
    assert all(env == envs[0] for env in envs)
    env = envs[0]
    assert env["PACKSIGHT_STORAGE"] == "s3"
    assert env["PACKSIGHT_S3_ENDPOINT_URL"].startswith("http://minio:")
    assert env["PACKSIGHT_DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert env["PACKSIGHT_BROKER_URL"].startswith("redis://redis:")


def test_workers_consume_the_configured_queues(compose: dict) -> None:
    defaults = Settings()
    env = compose["services"]["api"]["environment"]
    cpu = _command(compose["services"]["worker-cpu"])
    gpu = _command(compose["services"]["worker-gpu"])
    train = _command(compose["services"]["worker-train"])
    assert cpu[cpu.index("-Q") + 1] == env["PACKSIGHT_QUEUE_CPU"] == defaults.queue_cpu
    assert gpu[gpu.index("-Q") + 1] == env["PACKSIGHT_QUEUE_GPU"] == defaults.queue_gpu
    assert train[train.index("-Q") + 1] == env["PACKSIGHT_QUEUE_TRAIN"] == defaults.queue_train
    for command in (gpu, train):
        assert command[command.index("--pool") + 1] == "solo"
    for command in (cpu, gpu, train):
        assert command[:3] == ["celery", "-A", "packsight.workers.app"]


@pytest.mark.parametrize("name", ["worker-gpu", "worker-train"])
def test_gpu_workers_reserve_an_nvidia_device_on_the_pinned_image(compose: dict, name: str) -> None:
    service = compose["services"][name]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    dockerfile = ROOT / "compose" / Path(service["build"]["dockerfile"]).name
    first = dockerfile.read_text().split("FROM ", 1)[1].split()[0]
    # CUDA 13.0, the CUDA of the torch 2.14.1 build the tests run (test_compose_config.py).
    assert first == "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"


def test_flower_requires_checked_basic_auth(compose: dict) -> None:
    # `packsight flower` refuses to start without a real PACKSIGHT_FLOWER_BASIC_AUTH; the
    # password is not on the command line (where `ps` would show it).
    command = _command(compose["services"]["flower"])
    assert command[:2] == ["packsight", "flower"]
    assert not any("basic" in arg for arg in command)
    auth = compose["services"]["flower"]["environment"]["PACKSIGHT_FLOWER_BASIC_AUTH"]
    assert auth == "${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH}"


def _env_example() -> dict[str, str]:
    lines = (ROOT / "compose" / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """docker compose's ${NAME:?message} and ${NAME:-default}, enough for this file."""
    return re.sub(
        r"\$\{(\w+)(?::[?-]([^}]*))?\}",
        lambda m: variables.get(m.group(1)) or (m.group(2) or ""),
        value,
    )


def _app_env(compose: dict, variables: dict[str, str]) -> dict[str, str]:
    env = compose["services"]["api"]["environment"]
    return {name: _interpolate(str(value), variables) for name, value in env.items()}


def test_the_env_example_placeholders_are_refused(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    for name, value in _app_env(compose, _env_example()).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    refused_fields = {error["loc"][0] for error in refused.value.errors()}
    assert refused_fields == {"database_url", "s3_secret_key", "api_token", "flower_basic_auth"}
    assert "REPLACE-with" not in str(refused.value)  # errors name variables, never values


def test_real_secrets_in_the_env_file_start(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    variables = _env_example() | {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
        "PACKSIGHT_API_TOKEN": secrets.token_urlsafe(32),
        "FLOWER_BASIC_AUTH": f"ops:{secrets.token_urlsafe(24)}",
    }
    for name, value in _app_env(compose, variables).items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.flower_basic_auth is not None and settings.api_token is not None


def test_api_waits_for_migrations(compose: dict) -> None:
    depends = compose["services"]["api"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert _command(compose["services"]["migrate"]) == ["packsight", "migrate"]


def test_env_example_defines_every_required_variable() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = (ROOT / "compose" / ".env.example").read_text()
    defined = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    assert required and required <= defined


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_copy_paths_that_exist(dockerfile: str) -> None:
    for line in (ROOT / "compose" / dockerfile).read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile}: {source}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_hold_every_installed_package_folder(dockerfile: str) -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {path.split("/")[0] for path in project["tool"]["setuptools"]["package-dir"].values()}
    copied = {
        line.split()[1]
        for line in (ROOT / "compose" / dockerfile).read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert folders <= copied, f"{dockerfile} lacks {sorted(folders - copied)}"


def test_beat_runs_the_sweeper_through_packsight(compose: dict) -> None:
    assert _command(compose["services"]["beat"]) == ["packsight", "beat"]
