"""Numbers past their columns, control characters in query and path parameters, ids that cannot
name anything: each is a 4xx from the running API (uvicorn + Postgres), never a database error
turned into a 500."""

from __future__ import annotations

import pytest
from app_fixtures import Stack
from harness import S3Endpoint

pytestmark = pytest.mark.integration

INT32_MAX = 2**31 - 1
NO_JOB = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def job_id(stack: Stack, s3: S3Endpoint) -> str:
    """A real job (its one video is missing, so its item fails: nothing to label)."""
    s3.client().create_bucket(Bucket="api-bounds")
    with stack.client() as api:
        response = api.post("/v1/jobs", json={"bucket": "api-bounds", "keys": ["missing.mp4"]})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_results_offsets_stop_at_the_column_range(stack: Stack, job_id: str) -> None:
    with stack.client() as api:
        page = api.get(f"/v1/jobs/{job_id}/results", params={"offset": INT32_MAX})
        assert page.status_code == 200, page.text
        assert page.json()["items"] == [] and page.json()["next_offset"] is None
        for offset in (INT32_MAX + 1, 10**30, -1):
            response = api.get(f"/v1/jobs/{job_id}/results", params={"offset": offset})
            assert response.status_code == 422, response.text
            assert "offset" in response.text
        assert api.get(f"/v1/jobs/{job_id}/results", params={"limit": 1001}).status_code == 422


LABEL = {"bucket": "api-bounds", "video_key": "bounds/a.mp4", "operation": "Tape"}


def test_label_frames_stop_at_the_column_range(stack: Stack) -> None:
    with stack.client() as api:
        stored = api.post(
            "/v1/labels", json=LABEL | {"start_frame": INT32_MAX - 1, "end_frame": INT32_MAX}
        )
        assert stored.status_code == 201, stored.text
        assert stored.json()["end_frame"] == INT32_MAX
        for frames in (
            {"start_frame": 0, "end_frame": INT32_MAX + 1},
            {"start_frame": INT32_MAX + 1, "end_frame": INT32_MAX + 2},
            {"start_frame": -1, "end_frame": 5},
            {"start_frame": 0, "end_frame": 10**40},
        ):
            response = api.post("/v1/labels", json=LABEL | frames)
            assert response.status_code == 422, response.text
            assert "less than or equal to 2147483647" in response.text or "greater" in response.text


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"operation": "Ta\x00pe"}, "U+0000"),
        ({"operation": "Tape\x1b[2J"}, "U+001B"),
        ({"video_key": "a\x00.mp4"}, "U+0000"),
        ({"video_key": "v" * 1025}, "at most 1024"),
        ({"bucket": "API-Bounds"}, "S3 bucket names are"),
    ],
)
def test_label_text_is_printable_and_bounded(
    stack: Stack, change: dict[str, str], needle: str
) -> None:
    body = LABEL | {"start_frame": 0, "end_frame": 10} | change
    with stack.client() as api:
        response = api.post("/v1/labels", json=body)
    assert response.status_code == 422, response.text
    assert needle in response.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/labels", {"bucket": "api-bounds", "video_key": "a\x00.mp4"}),
        ("/v1/labels", {"bucket": "api\x00bounds", "video_key": "a.mp4"}),
        ("/v1/labels", {"bucket": "api-bounds", "video_key": "a\x7f.mp4"}),
        ("/v1/stats/confusion", {"model_version": "base\x00"}),
        ("/v1/stats/confusion", {"model_version": "1", "split": "te\x00st"}),
        ("/v1/training-runs", {"limit": "5", "extra": "\x00"}),  # undeclared ones too
        (f"/v1/jobs/{NO_JOB}/results", {"offset": "0", "junk": "x\x01"}),
    ],
)
def test_control_characters_in_query_parameters_are_422(
    stack: Stack, path: str, params: dict[str, str]
) -> None:
    with stack.client() as api:
        response = api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert "control character" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/a%00b",
        "/v1/jobs/a%00b/results",
        "/v1/training-runs/run%00",
        "/v1/jobs/%C2%85",  # C1 control (NEL), percent-encoded UTF-8
    ],
)
def test_control_characters_in_path_parameters_are_422(stack: Stack, path: str) -> None:
    with stack.client() as api:
        response = api.get(path)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/" + "x" * 500,
        f"/v1/jobs/{NO_JOB}x",
        "/v1/jobs/not-a-uuid/results",
        "/v1/training-runs/not-a-uuid",
        f"/v1/training-runs/{NO_JOB}",
    ],
)
def test_ids_that_name_nothing_are_404(stack: Stack, path: str) -> None:
    with stack.client() as api:
        response = api.get(path)
    assert response.status_code == 404, response.text
    assert len(response.text) < 400  # a 500-character id is echoed shortened


def test_an_upper_case_job_id_finds_the_job(stack: Stack, job_id: str) -> None:
    with stack.client() as api:
        assert api.get(f"/v1/jobs/{job_id.upper()}").json()["id"] == job_id


@pytest.mark.parametrize(
    ("reference", "status"),
    [
        ("\u00b2", 404),  # "²".isdigit() is true, int("²") raised ValueError (a 500)
        ("9" * 19, 404),  # past BIGINT: not an id, looked up as a name
        ("9" * 400, 404),
        ("x" * 513, 422),
    ],
)
def test_model_version_references_are_bounded(stack: Stack, reference: str, status: int) -> None:
    with stack.client() as api:
        response = api.get("/v1/stats/confusion", params={"model_version": reference})
    assert response.status_code == status, response.text


@pytest.mark.parametrize(("version_id", "status"), [(2**63, 422), (0, 422), (2**63 - 1, 404)])
def test_rollback_ids_stop_at_the_bigint_range(stack: Stack, version_id: int, status: int) -> None:
    with stack.client() as api:
        response = api.post(f"/v1/models/{version_id}/rollback")
    assert response.status_code == status, response.text


@pytest.mark.parametrize("limit", [0, 201, 2**31, 2**64])
def test_training_run_listing_limits_are_bounded(stack: Stack, limit: int) -> None:
    with stack.client() as api:
        assert api.get("/v1/training-runs", params={"limit": limit}).status_code == 422


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"max_steps": 2**31}, "max_steps"),  # total_steps is an INTEGER column
        ({"checkpoint_every": 10**12}, "checkpoint_every"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"lr": 2.0}, "lr"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"batch_size": 10**6}, "batch_size"),
    ],
)
def test_training_settings_out_of_range_are_422(
    stack: Stack, config: dict[str, float], needle: str
) -> None:
    # Refused before a run is recorded: nothing reaches the stack's training worker.
    with stack.client() as api:
        response = api.post("/v1/training-runs", json={"config": config})
    assert response.status_code == 422, response.text
    assert needle in response.text
