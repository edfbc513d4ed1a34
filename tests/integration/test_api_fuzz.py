"""Schemathesis against a running API: thousands of generated requests, valid and invalid by the
published schema (/openapi.json), none may get a 5xx.

The API under test is a process of its own, with its own fresh Postgres database and Redis (the
jobs, labels and training runs the fuzzer creates touch no other test) and the session's S3
server. The run is seeded; for a longer one raise the cases per operation:

    PACKSIGHT_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/integration/test_api_fuzz.py
    PACKSIGHT_FUZZ_SEED=7 ...   # other inputs than the default seed's
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from app_fixtures import start_api
from harness import S3Endpoint, budget

pytestmark = pytest.mark.integration

# Up to 200 cases per operation in the fuzzing phase, plus schemathesis's coverage phase
# (boundary values and schema violations of every parameter): 2,000+ cases in under a minute.
EXAMPLES = int(os.environ.get("PACKSIGHT_FUZZ_EXAMPLES", "200"))
SEED = int(os.environ.get("PACKSIGHT_FUZZ_SEED", "20261129"))
MIN_CASES = 2000
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.fixture(scope="module")
def fuzz_api(s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, token) of an API with a database and a broker of its own."""
    from packsight.models.migrate import upgrade_database

    token = secrets.token_urlsafe(24)
    with harness.postgres_database() as database, harness.redis_server() as redis:
        upgrade_database(database.url)
        env = {
            "PACKSIGHT_DATABASE_URL": database.url,
            "PACKSIGHT_BROKER_URL": redis.url,  # no worker consumes it: nothing runs
            "PACKSIGHT_STORAGE": "s3",
            "PACKSIGHT_S3_ENDPOINT_URL": s3.endpoint_url,
            "PACKSIGHT_S3_ACCESS_KEY": s3.access_key,
            "PACKSIGHT_S3_SECRET_KEY": s3.secret_key,
            "PACKSIGHT_S3_REGION": s3.region,
            "PACKSIGHT_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data")),
            "PACKSIGHT_API_TOKEN": token,
        }
        log = tmp_path_factory.mktemp("logs") / "api-fuzz.log"
        process, url = start_api(env, log)
        try:
            yield url, token
        finally:
            process.stop()


def test_no_generated_request_gets_a_server_error(
    fuzz_api: tuple[str, str], tmp_path: Path
) -> None:
    url, token = fuzz_api
    report = tmp_path / "report.json"
    argv = [
        SCHEMATHESIS,
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",
        "--mode",
        "all",  # valid and schema-violating inputs
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",  # no replay of earlier runs: the seed alone decides the cases
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    started = time.monotonic()
    # cwd: schemathesis writes nothing into the repository.
    run = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=budget(1800))
    elapsed = time.monotonic() - started
    output = (run.stdout + run.stderr)[-20_000:]
    assert report.is_file(), output
    result = json.loads(report.read_text())
    cases = result["test_cases"]["generated"]
    print(f"schemathesis: {cases} cases in {elapsed:.1f}s (seed {SEED}, {EXAMPLES} per operation)")
    assert run.returncode == 0, output
    assert result["failures"] == [] and result["errors"] == [], output
    assert result["operations"]["tested"] == result["operations"]["total"], output
    assert cases >= MIN_CASES, output
