"""`packsight flower` (what compose runs) serves Flower on a real Redis, behind the basic auth
of PACKSIGHT_FLOWER_BASIC_AUTH, with extra arguments passed through to Flower."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import harness
import httpx
import pytest

pytestmark = pytest.mark.integration


def test_flower_asks_for_the_configured_basic_auth(redis_url: str, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    port = harness.free_port()
    flower = harness.ProcessGroup(
        "flower",
        [
            str(Path(sys.executable).parent / "packsight"),
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        log_path=tmp_path / "flower.log",
        env={"PACKSIGHT_BROKER_URL": redis_url, "PACKSIGHT_FLOWER_BASIC_AUTH": f"ops:{password}"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        flower.wait_until(lambda: httpx.get(url, timeout=2).status_code == 401, what="Flower")
        assert httpx.get(url, auth=("ops", "wrong-password")).status_code == 401
        assert httpx.get(url, auth=("ops", password)).status_code == 200
    finally:
        flower.stop()
    # The password is not in Flower's log (nor on any command line: it never was one).
    assert password not in (tmp_path / "flower.log").read_text()
