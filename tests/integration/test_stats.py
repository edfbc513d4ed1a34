"""Evaluations on real Postgres (idempotent confusion cells, metrics merged per split) and
GET /v1/stats/confusion on the running stack, as JSON and as a PNG."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from app_fixtures import Stack
from PIL import Image
from sqlalchemy import select

from packsight.labels.metrics import NONE_LABEL, Evaluation
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.db import session_scope
from packsight.models.evaluations import (
    UnknownModelVersionError,
    confusion_for,
    record_evaluation,
)
from packsight.models.migrate import upgrade_database
from packsight.models.tables.versions import ConfusionCount, ModelVersion

pytestmark = pytest.mark.integration
OPERATIONS = list(load_taxonomy("assignment").operations)

TEST_EVAL = Evaluation(
    oca=0.5,
    tiou_at_05=0.25,
    aa_at_1=0.375,
    count=8,
    missing=1,
    confusion={
        ("Tape", "Tape"): 3,
        ("Tape", "Pack"): 1,
        ("Pack", "Pack"): 3,
        ("Idle", NONE_LABEL): 1,
    },
)
VAL_EVAL = Evaluation(
    oca=1.0, tiou_at_05=1.0, aa_at_1=0.5, count=2, missing=0, confusion={("Wrap", "Wrap"): 2}
)


@pytest.fixture(scope="module")
def db(postgres_url: str) -> str:
    upgrade_database(postgres_url)
    return postgres_url


def new_version(url: str) -> tuple[int, str]:
    """A fresh model version (unique name, so tests sharing the database don't collide)."""
    name = f"stats-{uuid.uuid4().hex[:8]}"
    with session_scope(url) as session:
        version = ModelVersion(
            name=name, base_model="tiny", quantization="nf4", taxonomy="assignment"
        )
        session.add(version)
        session.flush()
        return version.id, name


def record(url: str, version_id: int, split: str, evaluation: Evaluation) -> None:
    with session_scope(url) as session:
        record_evaluation(session, model_version_id=version_id, split=split, evaluation=evaluation)


def test_recording_twice_leaves_one_row_per_cell(db: str) -> None:
    version_id, _ = new_version(db)
    record(db, version_id, "test", TEST_EVAL)
    record(db, version_id, "test", TEST_EVAL)
    with session_scope(db) as session:
        assert confusion_for(session, model_version_id=version_id, split="test") == (
            TEST_EVAL.confusion
        )
        rows = session.scalars(
            select(ConfusionCount).where(ConfusionCount.model_version_id == version_id)
        ).all()
    assert len(rows) == len(TEST_EVAL.confusion)

    # A re-evaluation replaces the cells: ones it lacks disappear.
    record(db, version_id, "test", VAL_EVAL)
    with session_scope(db) as session:
        assert confusion_for(session, model_version_id=version_id, split="test") == {
            ("Wrap", "Wrap"): 2
        }


def test_splits_are_merged_not_overwritten(db: str) -> None:
    version_id, _ = new_version(db)
    record(db, version_id, "test", TEST_EVAL)
    record(db, version_id, "val", VAL_EVAL)
    with session_scope(db) as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        metrics = version.metrics
        val_cells = confusion_for(session, model_version_id=version_id, split="val")
        test_cells = confusion_for(session, model_version_id=version_id, split="test")
    assert metrics == {"test": TEST_EVAL.to_dict(), "val": VAL_EVAL.to_dict()}
    assert (test_cells, val_cells) == (TEST_EVAL.confusion, VAL_EVAL.confusion)
    with session_scope(db) as session:
        assert confusion_for(session, model_version_id=version_id, split="train") == {}


def test_an_unknown_version_is_refused(db: str) -> None:
    with pytest.raises(UnknownModelVersionError), session_scope(db) as session:
        record_evaluation(session, model_version_id=10**12, split="test", evaluation=TEST_EVAL)


@pytest.fixture(scope="module")
def evaluated(stack: Stack) -> tuple[int, str]:
    url = stack.env["PACKSIGHT_DATABASE_URL"]
    upgrade_database(url)
    version_id, name = new_version(url)
    record(url, version_id, "test", TEST_EVAL)
    return version_id, name


def expected_matrix(confusion: dict[tuple[str, str], int], columns: list[str]) -> list[list[int]]:
    return [[confusion.get((row, col), 0) for col in columns] for row in OPERATIONS]


def test_confusion_as_json_by_name_and_id(stack: Stack, evaluated: tuple[int, str]) -> None:
    version_id, name = evaluated
    with stack.client() as api:
        by_name = api.get("/v1/stats/confusion", params={"model_version": name})
        by_id = api.get(
            "/v1/stats/confusion",
            params={"model_version": str(version_id), "split": "test", "format": "json"},
        )
    assert by_name.status_code == 200, by_name.text
    assert by_id.json() == by_name.json()
    body = by_name.json()
    predicted = [*OPERATIONS, NONE_LABEL]
    assert body == {
        "model_version": name,
        "split": "test",
        "taxonomy": "assignment",
        "operations": OPERATIONS,
        "predicted": predicted,
        "matrix": expected_matrix(TEST_EVAL.confusion, predicted),
        "metrics": TEST_EVAL.to_dict(),
    }
    assert sum(map(sum, body["matrix"])) == TEST_EVAL.count


def test_confusion_as_png(stack: Stack, evaluated: tuple[int, str]) -> None:
    _, name = evaluated
    with stack.client() as api:
        response = api.get("/v1/stats/confusion", params={"model_version": name, "format": "png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG" and image.width > 400


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"model_version": "no-such-version"}, 404, "not found"),
        ({"model_version": "999999999999"}, 404, "not found"),
        ({"split": "val"}, 404, "no evaluation on split 'val'"),
        ({"format": "svg"}, 422, "format"),
        ({"model_version": ""}, 422, "model_version"),
    ],
)
def test_bad_confusion_requests(
    stack: Stack, evaluated: tuple[int, str], params: dict[str, str], code: int, needle: str
) -> None:
    query = {"model_version": evaluated[1]} | params
    with stack.client() as api:
        response = api.get("/v1/stats/confusion", params=query)
    assert response.status_code == code, response.text
    assert needle in response.text


@pytest.mark.parametrize("header", [None, "Bearer wrong-token"])
def test_stats_need_the_bearer_token(
    stack: Stack, evaluated: tuple[int, str], header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(
        f"{stack.api_url}/v1/stats/confusion",
        params={"model_version": evaluated[1]},
        headers=headers,
    )
    assert response.status_code == 401
