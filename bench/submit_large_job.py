"""How long `POST /v1/jobs` takes for a large job: a list of N keys and a prefix that lists to N
objects, against a real API process (uvicorn, Postgres, Redis; S3 or a local folder), next to a
1,000-key request in the same run. Only the first chunk of items is recorded in the request; the
rest is listed in the background, so the time should barely grow with N. Also reports how many
messages the broker holds afterwards (bounded by PACKSIGHT_DISPATCH_WINDOW, whatever N).

    .venv/bin/python bench/submit_large_job.py [--keys 100000] [--repeat 3]

Writes docs/results/submit_large_job_<date>.json (override with --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the real services

import harness  # noqa: E402

from packsight.models.migrate import upgrade_database  # noqa: E402


def start_api(env: dict[str, str], log: Path) -> tuple[harness.ProcessGroup, str]:
    port = harness.free_port()
    argv = [str(Path(sys.executable).parent / "packsight"), "api", "--port", str(port)]
    api = harness.ProcessGroup("api", argv, log_path=log, env=env)
    url = f"http://127.0.0.1:{port}"
    api.wait_until(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200, what="up")
    return api, url


def timed_post(url: str, token: str, body: dict) -> tuple[float, dict]:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=120)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="packsight-bench-"))
    folder = work / "root" / "archive"
    (folder / "site").mkdir(parents=True)
    for n in range(args.keys):
        (folder / "site" / f"{n:07d}.mp4").touch()
    with harness.postgres_database() as database, harness.redis_server() as broker:
        upgrade_database(database.url)
        token = secrets.token_urlsafe(24)
        env = {
            "PACKSIGHT_DATABASE_URL": database.url,
            "PACKSIGHT_BROKER_URL": broker.url,  # no workers: nothing runs, only the request
            "PACKSIGHT_STORAGE": "local",
            "PACKSIGHT_LOCAL_ROOT": str(work / "root"),
            "PACKSIGHT_DATA_DIR": str(work / "data"),
            "PACKSIGHT_API_TOKEN": token,
        }
        api, url = start_api(env, work / "api.log")
        try:
            results: dict[str, list[float]] = {"keys_1000": [], "keys_n": [], "prefix_n": []}
            for _ in range(args.repeat):
                keys = [f"site/{n:07d}.mp4" for n in range(args.keys)]
                for name, body in (
                    ("keys_1000", {"bucket": "archive", "keys": keys[:1000]}),
                    ("keys_n", {"bucket": "archive", "keys": keys}),
                    ("prefix_n", {"bucket": "archive", "prefix": "site/"}),
                ):
                    elapsed, accepted = timed_post(url, token, body)
                    results[name].append(elapsed)
                    print(f"{name:>10}: {elapsed:6.3f} s  ({accepted['items']} items recorded)")
            queued = sum(redis.Redis.from_url(broker.url).llen(q) for q in ("cpu", "gpu.t4"))
        finally:
            api.stop()
    median = {name: statistics.median(times) for name, times in results.items()}
    report = {
        "benchmark": "submit_large_job",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "keys": args.keys,
        "seconds": results,
        "median_s": median,
        "ratio_keys_n_to_1000": round(median["keys_n"] / median["keys_1000"], 2),
        "ratio_prefix_n_to_1000": round(median["prefix_n"] / median["keys_1000"], 2),
        "broker_messages_after": queued,
    }
    print(json.dumps(report, indent=2))
    out = (
        args.out
        or ROOT / "docs" / "results" / f"submit_large_job_{datetime.now(UTC):%Y-%m-%d}.json"
    )
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
