"""The bucket the retraining tests train from, and polling a run or job through the API until it
reaches a final state."""

from __future__ import annotations

import time

import httpx

BUCKET = "verified-archive"


def wait_for(
    client: httpx.Client, path: str, final: tuple[str, ...], timeout_s: float = 600
) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(path).raise_for_status().json()
        if body["state"] in final:
            return body
        time.sleep(1)
    raise AssertionError(f"{path} did not finish in {timeout_s}s: {body}")
