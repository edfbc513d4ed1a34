"""A backing service that cannot be reached is a 503 naming the service, never a 500 and never
the driver's message (hosts, ports, users). Each test runs its own `packsight api` process
against a database, S3 endpoint or broker on a port where nothing listens (or, for /healthz on
the embedded default, none at all)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import httpx
import pytest
from app_fixtures import start_api
from harness import S3Endpoint, budget

pytestmark = pytest.mark.integration

NO_JOB = "00000000-0000-0000-0000-000000000000"


def dead_port() -> int:
    """A loopback port nothing listens on (handed out by the harness, never bound)."""
    return harness.free_port()


def assert_no_addresses(response: httpx.Response, *ports: int) -> None:
    assert "127.0.0.1" not in response.text and "localhost" not in response.text
    for port in ports:
        assert not re.search(rf"\b{port}\b", response.text), response.text
    assert "Traceback" not in response.text and "psycopg2" not in response.text


def api_env(s3: S3Endpoint, data_dir: Path, **overrides: str) -> dict[str, str]:
    return {
        "PACKSIGHT_STORAGE": "s3",
        "PACKSIGHT_S3_ENDPOINT_URL": s3.endpoint_url,
        "PACKSIGHT_S3_ACCESS_KEY": s3.access_key,
        "PACKSIGHT_S3_SECRET_KEY": s3.secret_key,
        "PACKSIGHT_S3_REGION": s3.region,
        "PACKSIGHT_DATA_DIR": str(data_dir),
        "PACKSIGHT_API_TOKEN": secrets.token_urlsafe(24),
    } | overrides


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=budget(60))


@pytest.fixture(scope="module")
def no_database(
    s3: S3Endpoint, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, list[int]]]:
    """An API whose database and S3 endpoint are ports where nothing listens; Redis is real."""
    db_port, s3_port = dead_port(), dead_port()
    env = api_env(
        s3,
        tmp_path_factory.mktemp("no-db"),
        PACKSIGHT_DATABASE_URL=f"postgresql+psycopg2://postgres@127.0.0.1:{db_port}/packsight",
        PACKSIGHT_BROKER_URL=redis_url,
        PACKSIGHT_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
    )
    log = tmp_path_factory.mktemp("logs") / "api-no-db.log"
    process, url = start_api(env, log, healthy=False)
    try:
        yield Api(url, env["PACKSIGHT_API_TOKEN"]), [db_port, s3_port]
    finally:
        process.stop()


def test_a_dead_database_is_503_without_its_address(no_database: tuple[Api, list[int]]) -> None:
    api, ports = no_database
    with api.client() as client:
        body: dict[str, object] | None
        for method, path, body in [
            ("GET", f"/v1/jobs/{NO_JOB}", None),
            ("GET", f"/v1/jobs/{NO_JOB}/results", None),
            ("GET", "/v1/models", None),
            ("GET", "/v1/training-runs", None),
            ("GET", "/v1/labels?bucket=abc&video_key=a.mp4", None),
            ("POST", "/v1/training-runs", {}),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, f"{method} {path}: {response.text}"
            assert response.json() == {"detail": "database unavailable, retry later"}
            assert_no_addresses(response, *ports)


def test_a_dead_object_store_is_503(no_database: tuple[Api, list[int]]) -> None:
    api, ports = no_database
    with api.client() as client:
        response = client.post("/v1/jobs", json={"bucket": "archive", "prefix": "site-a/"})
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "object storage unavailable, retry later"}
    assert_no_addresses(response, *ports)


def test_health_names_what_is_down_and_answers_quickly(no_database: tuple[Api, list[int]]) -> None:
    api, ports = no_database
    started = time.monotonic()
    response = httpx.get(f"{api.url}/healthz", timeout=budget(30))
    assert time.monotonic() - started < 6
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable", "broker": "ok", "storage": "unavailable"},
    }
    assert_no_addresses(response, *ports)


@pytest.fixture(scope="module")
def no_broker(
    s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, int]]:
    """An API with its own fresh database and the real S3, whose broker is a dead port: the
    jobs it records are never queued, so they touch no other test."""
    from packsight.models.migrate import upgrade_database

    broker_port = dead_port()
    with harness.postgres_database() as database:
        upgrade_database(database.url)
        env = api_env(
            s3,
            tmp_path_factory.mktemp("no-broker"),
            PACKSIGHT_DATABASE_URL=database.url,
            PACKSIGHT_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
        )
        log = tmp_path_factory.mktemp("logs") / "api-no-broker.log"
        process, url = start_api(env, log, healthy=False)
        try:
            yield Api(url, env["PACKSIGHT_API_TOKEN"]), broker_port
        finally:
            process.stop()


def test_a_dead_broker_is_503(no_broker: tuple[Api, int], s3: S3Endpoint) -> None:
    api, port = no_broker
    s3.client().create_bucket(Bucket="api-no-broker")
    with api.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["checks"] == {
            "database": "ok",
            "broker": "unavailable",
            "storage": "ok",
        }
        response = client.post("/v1/jobs", json={"bucket": "api-no-broker", "keys": ["a.mp4"]})
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "broker is unavailable" in detail and "nothing was recorded" in detail
    assert_no_addresses(response, port)


def test_health_on_the_embedded_default(tmp_path: Path) -> None:
    # No broker (tasks run in-process), a SQLite file and a local folder: healthy.
    unset = ("DATABASE_URL", "BROKER_URL")
    env = {f"PACKSIGHT_{name}": "" for name in unset} | {
        "PACKSIGHT_STORAGE": "local",
        "PACKSIGHT_DATA_DIR": str(tmp_path / "data"),
        "PACKSIGHT_API_TOKEN": secrets.token_urlsafe(24),
    }
    process, url = start_api(env, tmp_path / "api-embedded.log")
    try:
        response = httpx.get(f"{url}/healthz")
    finally:
        process.stop()
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "not configured", "storage": "ok"},
    }
