"""The API's contract for bad input and auth, against the running stack (uvicorn + Postgres +
S3). None of these requests may create a job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from app_fixtures import Stack
from harness import S3Endpoint
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.tables.jobs import Job
from packsight.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(stack: Stack, s3: S3Endpoint) -> str:
    client = s3.client()
    client.create_bucket(Bucket="api-tests")
    client.put_object(Bucket="api-tests", Key="docs/readme.txt", Body=b"no videos here")
    return "api-tests"


def job_count(settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count(Job.id))) or 0


def test_health_checks_every_service_and_needs_no_token(stack: Stack) -> None:
    response = httpx.get(f"{stack.api_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        "Basic abc",
        "Bearer " + "x" * 2000,  # over 1 KiB
        "Bearer \u00e9t\u00e9",  # non-ASCII: compare_digest on str raised TypeError (a 500)
        "Bearer caf\u00e9-" + "x" * 30,
        "Bearer a\tb",  # control characters
        "Bearer a\x7fb",
        "Bearer a\x01b",
    ],
)
def test_jobs_need_the_bearer_token(stack: Stack, header: str | None) -> None:
    # Latin-1 bytes: what a client can put in a header beyond ASCII.
    # Bytes for the name too: httpx takes str -> str or bytes -> bytes headers.
    headers = {b"Authorization": header.encode("latin-1")} if header else {}
    response = httpx.post(
        f"{stack.api_url}/v1/jobs", json={"bucket": "abc", "prefix": "y/"}, headers=headers
    )
    # 400 where uvicorn's HTTP parser refuses the header itself; 401 from the API otherwise.
    assert response.status_code in (400, 401), response.text
    assert "Traceback" not in response.text
    response = httpx.get(f"{stack.api_url}/v1/jobs/x", headers=headers)
    assert response.status_code in (400, 401)


def test_the_token_with_its_own_bytes_still_works(stack: Stack) -> None:
    with stack.client() as api:
        assert api.get("/v1/models").status_code == 200
        almost = stack.token[:-1] + ("A" if stack.token[-1] != "A" else "B")
        assert (
            api.get("/v1/models", headers={"Authorization": f"Bearer {almost}"}).status_code == 401
        )


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"bucket": "no-such-bucket", "prefix": "a/"}, 404, "does not exist"),
        ({"bucket": "api-tests", "prefix": ""}, 422, "must not be empty"),
        ({"bucket": "api-tests", "prefix": "docs/"}, 422, "no video files"),
        ({"bucket": "api-tests", "prefix": "nothing-here/"}, 422, "no video files"),
        ({"bucket": "api-tests"}, 422, "exactly one of"),
        ({"bucket": "api-tests", "prefix": "a/", "keys": ["a.mp4"]}, 422, "exactly one of"),
        ({"bucket": "api-tests", "keys": []}, 422, "must not be empty"),
        ({"bucket": "api-tests", "keys": ["../etc/passwd.mp4"]}, 422, "'..'"),
        ({"bucket": "", "prefix": "a/"}, 422, "bucket"),
        ({"bucket": "api-tests", "prefix": "a/", "colour": "red"}, 422, "colour"),
        ({"bucket": 7, "prefix": ["a"]}, 422, "bucket"),
        # S3's bucket naming rules.
        ({"bucket": "ab", "prefix": "a/"}, 422, "S3 bucket names are"),
        ({"bucket": "Api-Tests", "prefix": "a/"}, 422, "S3 bucket names are"),
        ({"bucket": "api_tests", "prefix": "a/"}, 422, "S3 bucket names are"),
        ({"bucket": "a" * 64, "prefix": "a/"}, 422, "S3 bucket names are"),
        ({"bucket": "-api-tests", "prefix": "a/"}, 422, "S3 bucket names are"),
        ({"bucket": "api..tests", "prefix": "a/"}, 422, "adjacent dots"),
        ({"bucket": "192.168.5.4", "prefix": "a/"}, 422, "IP address"),
        ({"bucket": "xn--api-tests", "prefix": "a/"}, 422, "reserves"),
        ({"bucket": "api-tests-s3alias", "prefix": "a/"}, 422, "reserves"),
        ({"bucket": "api\x00tests", "prefix": "a/"}, 422, "S3 bucket names are"),
        # Keys: S3's 1,024 bytes of UTF-8, no control characters; the message names the key.
        ({"bucket": "api-tests", "keys": ["k" * 1021 + ".mp4"]}, 422, "'kkkkkkkk"),
        ({"bucket": "api-tests", "keys": ["k" * 1021 + ".mp4"]}, 422, "at most 1024"),
        ({"bucket": "api-tests", "keys": ["\u00e9" * 511 + ".mp4"]}, 422, "1026 bytes"),
        ({"bucket": "api-tests", "keys": ["a\x00.mp4"]}, 422, "U+0000"),
        ({"bucket": "api-tests", "keys": ["a\nb.mp4"]}, 422, "U+000A"),
        ({"bucket": "api-tests", "keys": ["a\x85b.mp4"]}, 422, "U+0085"),
        ({"bucket": "api-tests", "keys": ["a\x7fb.mp4"]}, 422, "U+007F"),
        # Prefixes likewise.
        ({"bucket": "api-tests", "prefix": "p" * 1025}, 422, "at most 1024"),
        ({"bucket": "api-tests", "prefix": "a\x00/"}, 422, "U+0000"),
        ({"bucket": "api-tests", "prefix": "site\x1b[31m/"}, 422, "U+001B"),
    ],
)
def test_bad_job_requests_get_a_clear_4xx(
    stack: Stack,
    stack_settings: Settings,
    bucket: str,
    body: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    before = job_count(stack_settings)
    with stack.client() as api:
        response = api.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert job_count(stack_settings) == before


def test_a_refused_key_is_echoed_shortened(stack: Stack) -> None:
    key = "site-a/" + "x" * 3000 + ".mp4"
    with stack.client() as api:
        response = api.post("/v1/jobs", json={"bucket": "api-tests", "keys": [key]})
    assert response.status_code == 422
    assert "'site-a/xxx" in response.text and "3011 characters" in response.text
    assert len(response.text) < 1000


def test_the_artifact_bucket_is_not_a_job_source(stack: Stack, stack_settings: Settings) -> None:
    before = job_count(stack_settings)
    artifacts = stack_settings.artifact_bucket
    with stack.client() as api:
        for body in (
            {"bucket": artifacts, "prefix": "training-runs/"},
            {"bucket": artifacts, "keys": ["a.mp4"]},
        ):
            response = api.post("/v1/jobs", json=body)
            assert response.status_code == 422, response.text
            assert "internal artifact bucket" in response.text
    assert job_count(stack_settings) == before


def test_a_job_holds_at_most_100000_keys_and_they_fit_in_a_request(
    stack: Stack, stack_settings: Settings
) -> None:
    before = job_count(stack_settings)
    keys = [f"site-a/2026-11-29/U0101_S0100_{i:08d}.mp4" for i in range(100_000)]
    with stack.client() as api:
        # ~4.5 MB: under the 8 MiB default limit, so it is read and validated (the bucket is
        # missing: 404, no job).
        response = api.post("/v1/jobs", json={"bucket": "no-such-bucket", "keys": keys})
        assert response.status_code == 404, response.text[:500]
        response = api.post(
            "/v1/jobs", json={"bucket": "api-tests", "keys": [*keys, "one-more.mp4"]}
        )
    assert response.status_code == 422
    assert "100000" in response.text
    assert len(response.text) < 1000  # the refused list is not echoed back
    assert job_count(stack_settings) == before


def test_bodies_over_the_limit_get_413_naming_the_setting(stack: Stack) -> None:
    limit = 8 * 1024 * 1024  # the default of PACKSIGHT_MAX_REQUEST_BYTES
    body = b'{"bucket": "api-tests", "keys": ["' + b"k" * limit + b'.mp4"]}'

    def chunks() -> Iterator[bytes]:
        # No Content-Length: chunked transfer, counted while it is read.
        for first in range(0, len(body), 256 * 1024):
            yield body[first : first + 256 * 1024]

    with stack.client() as api:
        for content in (body, chunks()):
            response = api.post(
                "/v1/jobs", content=content, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 413, response.text[:300]
            assert response.json() == {
                "detail": f"request body larger than {limit} bytes "
                "(the limit is PACKSIGHT_MAX_REQUEST_BYTES)"
            }
        # The connection (kept alive) still serves the next request.
        assert api.get("/v1/models").status_code == 200


def test_malformed_json_is_rejected(stack: Stack) -> None:
    with stack.client() as api:
        response = api.post(
            "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422


def test_unknown_job_is_404(stack: Stack) -> None:
    with stack.client() as api:
        assert api.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
        assert api.get("/v1/jobs/nope/results").status_code == 404
