"""The harness's Redis: private, empty, not persisted, and restartable (losing every key)."""

from __future__ import annotations

import uuid

import harness
import pytest
import redis
from harness import pid_alive
from harness.process import _bindable, _port_open

pytestmark = pytest.mark.integration


def test_redis_answers_on_a_private_port(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    setting = client.config_get("port")["port"]
    assert setting is not None
    port = int(setting)
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
    if not _port_open(harness.SHARED_REDIS_PORT):
        pytest.skip("no Redis on 127.0.0.1:6379")
    with harness.redis_server(private=False) as shared:
        assert not shared.private and shared.db != 0
        client = redis.Redis.from_url(shared.url)
        client.set("probe", "1")
    assert client.dbsize() == 0


def test_redis_restart_loses_every_key_and_keeps_the_port() -> None:
    with harness.redis_server() as server:
        assert isinstance(server, harness.RedisServer)
        redis.Redis.from_url(server.url).set("probe", "before")
        before = server.process.pid if server.process else 0

        server.restart()
        assert not pid_alive(before)
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.get("probe") is None

        server.pause()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(server.url).ping()
        assert not _bindable(server.port)
        server.resume()
        assert redis.Redis.from_url(server.url).ping()
