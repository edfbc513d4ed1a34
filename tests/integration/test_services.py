"""The test harness itself: real Postgres, Redis and S3 start, are isolated, and clean up."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import httpx
import pytest
import redis
import sqlalchemy as sa
from botocore.exceptions import ClientError
from harness import S3Endpoint

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


# --- the building blocks ---------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [harness.free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(harness.process._bindable(port) for port in ports)


def test_process_group_stop_reaches_children(tmp_path: Path) -> None:
    script = "sleep 300 & echo child=$!; echo ready; wait"
    group = harness.ProcessGroup("sleeper", ["bash", "-c", script], log_path=tmp_path / "log")
    group.wait_until(lambda: "ready" in group.log_path.read_text(), what="ready", timeout_s=10)
    child = int(group.log_path.read_text().split("child=")[1].split()[0])
    group.stop(timeout_s=5)
    assert _gone(group.pid)
    assert _gone(child)


def test_process_group_reports_early_exit_with_log(tmp_path: Path) -> None:
    group = harness.ProcessGroup(
        "crasher", ["bash", "-c", "echo boom; exit 3"], log_path=tmp_path / "log"
    )
    with pytest.raises(harness.ServiceError, match=r"(?s)code 3.*boom"):
        group.wait_until(lambda: False, what="ready", timeout_s=10)
    group.stop()


def test_process_group_times_out_with_last_probe_error(tmp_path: Path) -> None:
    group = harness.ProcessGroup("idler", ["sleep", "300"], log_path=tmp_path / "log")

    def never_ready() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(harness.ServiceError, match="nobody home"):
        group.wait_until(never_ready, what="ready", timeout_s=0.5)
    group.stop()
    assert _gone(group.pid)


# --- Postgres --------------------------------------------------------------------------------


def test_postgres_database_is_fresh_and_writable(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
            # A temporary table: proves writes work without leaving state for later tests.
            connection.execute(sa.text("CREATE TEMPORARY TABLE probe (id int)"))
            connection.execute(sa.text("INSERT INTO probe VALUES (1)"))
            assert connection.execute(sa.text("SELECT id FROM probe")).scalar_one() == 1
    finally:
        engine.dispose()
    assert name.startswith("packsight_test_")
    assert str(os.getpid()) in name  # unique to this test session


def test_private_postgres_cluster_starts_and_cleans_up() -> None:
    # The path CI takes when no Postgres answers on :5432.
    with harness.postgres_database(use_shared_server=False) as database:
        assert database.private and database.port != harness.SHARED_POSTGRES_PORT
        engine = sa.create_engine(database.url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        cluster = database.cluster
        assert cluster is not None and cluster.process is not None
    assert _gone(cluster.process.pid)
    assert not cluster.root.exists()
    assert not harness.process._port_open(database.port)


# --- Redis -----------------------------------------------------------------------------------


def test_redis_answers_on_a_private_port(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    port = int(client.config_get("port")["port"])
    assert port != harness.SHARED_REDIS_PORT
    assert redis_url == f"redis://127.0.0.1:{port}/0"
    assert client.config_get("save")["save"] == ""  # nothing persisted between sessions


def test_redis_servers_share_no_state(redis_url: str) -> None:
    key, mine = f"probe:{uuid.uuid4()}", redis.Redis.from_url(redis_url)
    mine.set(key, "here")
    try:
        with harness.redis_server() as other:
            assert redis.Redis.from_url(other.url).get(key) is None
    finally:
        mine.delete(key)


def test_shared_redis_fallback_uses_a_spare_db_and_flushes_it() -> None:
    if not harness.process._port_open(harness.SHARED_REDIS_PORT):
        pytest.skip("no Redis on 127.0.0.1:6379")
    with harness.redis_server(private=False) as shared:
        assert not shared.private and shared.db != 0
        client = redis.Redis.from_url(shared.url)
        client.set("probe", "1")
    assert client.dbsize() == 0


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3: S3Endpoint) -> Iterator[str]:
    client, name = s3.client(), f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def test_s3_put_get_and_paged_listing(s3: S3Endpoint, bucket: str) -> None:
    client = s3.client()
    keys = [f"clips/{index:02d}.json" for index in range(5)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert client.get_object(Bucket=bucket, Key=keys[3])["Body"].read() == keys[3].encode()

    pages, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = client.list_objects_v2(Bucket=bucket, Prefix="clips/", MaxKeys=2, **extra)
        pages.append([item["Key"] for item in page.get("Contents", [])])
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [key for page in pages for key in page] == keys


def test_s3_has_no_implicit_buckets(s3: S3Endpoint) -> None:
    with pytest.raises(ClientError) as error:
        s3.client().put_object(Bucket=f"missing-{uuid.uuid4().hex[:8]}", Key="k", Body=b"x")
    assert error.value.response["Error"]["Code"] == "NoSuchBucket"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key": "PSUNKNOWNKEY0000"}, "InvalidAccessKeyId"),
    ],
)
def test_s3_rejects_wrong_credentials(
    s3: S3Endpoint, change: dict[str, str], expected: str
) -> None:
    wrong = dataclasses.replace(s3, **change).client(max_attempts=1)
    with pytest.raises(ClientError) as error:
        wrong.list_buckets()
    assert error.value.response["Error"]["Code"] == expected


def test_s3_rejects_anonymous_requests(s3: S3Endpoint, bucket: str) -> None:
    s3.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"x")
    assert httpx.get(f"{s3.endpoint_url}/{bucket}/secret.txt").status_code == 403


def test_s3_server_cleans_up() -> None:
    server = harness.s3_server()
    server.stop()
    assert server.process is not None and _gone(server.process.pid)
    assert not server.root.exists()
    assert not any(harness.process._port_open(port) for port in server.ports.values())
    leftovers = [p for p in os.listdir("/tmp") if p.startswith("seaweedfs-")]
    assert not [p for p in leftovers if any(f"-{port}.sock" in p for port in server.ports.values())]
