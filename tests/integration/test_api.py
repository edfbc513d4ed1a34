"""The API's contract for bad input and auth, against the running stack (uvicorn + Postgres +
S3). None of these requests may create a job."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from packsight.models.db import session_scope
from packsight.models.tables import Job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(stack, s3) -> str:  # type: ignore[no-untyped-def]
    client = s3.client()
    client.create_bucket(Bucket="api-tests")
    client.put_object(Bucket="api-tests", Key="docs/readme.txt", Body=b"no videos here")
    return "api-tests"


def job_count(settings) -> int:  # type: ignore[no-untyped-def]
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count(Job.id))) or 0


def test_health_needs_no_token(stack) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{stack.api_url}/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc"])
def test_jobs_need_the_bearer_token(stack, header) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": header} if header else {}
    response = httpx.post(
        f"{stack.api_url}/v1/jobs", json={"bucket": "x", "prefix": "y/"}, headers=headers
    )
    assert response.status_code == 401
    assert httpx.get(f"{stack.api_url}/v1/jobs/x", headers=headers).status_code == 401


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
    ],
)
def test_bad_job_requests_get_a_clear_4xx(stack, stack_settings, bucket, body, status, needle):  # type: ignore[no-untyped-def]
    before = job_count(stack_settings)
    with stack.client() as api:
        response = api.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert job_count(stack_settings) == before


def test_malformed_json_is_rejected(stack) -> None:  # type: ignore[no-untyped-def]
    with stack.client() as api:
        response = api.post(
            "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422


def test_unknown_job_is_404(stack) -> None:  # type: ignore[no-untyped-def]
    with stack.client() as api:
        assert api.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
        assert api.get("/v1/jobs/nope/results").status_code == 404
