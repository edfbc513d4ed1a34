"""Real services for tests — Postgres, Redis, S3 (SeaweedFS) — on loopback, private per session,
with the faults a chaos test injects: kill a process or its leader, pause and resume a server.

No pytest imports: conftest.py, e2e scripts and benchmarks all build on this package.
"""

from .budget import budget, slowness
from .postgres import SHARED_POSTGRES_PORT, PostgresCluster, PostgresDatabase, postgres_database
from .process import (
    LOOPBACK,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ProcessGroup,
    ServiceError,
    free_port,
    pid_alive,
    stop_all,
)
from .redis import SHARED_REDIS_PORT, RedisServer, SharedRedisDatabase, redis_server
from .s3 import S3Endpoint, S3Server, s3_server
from .service import PAUSE_TIMEOUT_S

__all__ = [
    "LOOPBACK",
    "PAUSE_TIMEOUT_S",
    "SHARED_POSTGRES_PORT",
    "SHARED_REDIS_PORT",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "PostgresCluster",
    "PostgresDatabase",
    "ProcessGroup",
    "RedisServer",
    "S3Endpoint",
    "S3Server",
    "ServiceError",
    "SharedRedisDatabase",
    "budget",
    "free_port",
    "pid_alive",
    "postgres_database",
    "redis_server",
    "s3_server",
    "slowness",
    "stop_all",
]
