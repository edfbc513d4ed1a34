"""Redis for tests: a private redis-server (which can restart, losing its data), or a spare DB
of the shared one at :6379 when the binary is missing."""

from __future__ import annotations

import shutil
from typing import Any

from .process import LOOPBACK, ServiceError, _Stoppable, free_port
from .service import _TempService

SHARED_REDIS_PORT = 6379


class RedisServer(_TempService):
    """A private redis-server with persistence off."""

    def __init__(self, binary: str) -> None:
        super().__init__("redis")
        self.port, self.db = free_port(), 0
        self.url = f"redis://{LOOPBACK}:{self.port}/{self.db}"
        argv = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"]
        self._start("redis-server", argv, ready=lambda: _redis_client(self.url).ping())

    @property
    def private(self) -> bool:
        return True

    @property
    def listen_ports(self) -> list[int]:
        return [self.port]

    def restart(self) -> None:
        """Stop and start the server on the same port; with persistence off every key is lost,
        as on a production Redis restarted without AOF or RDB."""
        self.pause()
        self.resume()


class SharedRedisDatabase(_Stoppable):
    """An empty numbered DB of the Redis at :6379, flushed by stop(): the fallback when
    `redis-server` is not installed. Racy if sessions share it, hence not the default."""

    private = False

    def __init__(self) -> None:
        self.port = SHARED_REDIS_PORT
        for db in range(15, 0, -1):
            self.db, self.url = db, f"redis://{LOOPBACK}:{self.port}/{db}"
            try:
                if _redis_client(self.url).dbsize() == 0:
                    return
            except Exception as error:
                message = f"no redis-server binary, and the Redis at :{self.port} fails: {error}"
                raise ServiceError(message) from error
        raise ServiceError(f"no empty database left on the Redis at :{self.port}")

    def stop(self) -> None:
        _redis_client(self.url).flushdb()


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


def redis_server(*, private: bool = True) -> RedisServer | SharedRedisDatabase:
    """A private Redis, or a spare DB of the shared one if `redis-server` is not installed."""
    binary = shutil.which("redis-server")
    return RedisServer(binary) if private and binary else SharedRedisDatabase()
