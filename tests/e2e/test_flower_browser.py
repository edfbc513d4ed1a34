"""Flower as an operator sees it: headless Chromium (Debian's, driven by Selenium through Debian's
chromium-driver) logs in through `packsight flower`'s basic auth while a real job runs through
the stack's CPU and GPU workers, and finds the tasks of both queues on the Tasks page and both
queues on the Broker page. A screenshot of the Tasks page is kept as a test artifact."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import harness
import httpx
import pytest
from app_fixtures import Stack
from harness import S3Endpoint, budget
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait
from test_label_archive import wait_for_final_state

from packsight.video.synth import write_synthetic_archive

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BUCKET = "flower-browser"
# workers/app.py TASK_OF: sampling runs on `cpu`, labelling on `gpu.t4`. (packsight.list_source,
# also on `cpu`, runs only for a source longer than the first chunk that the API lists itself.)
CPU_TASKS, GPU_TASKS = ("packsight.sample_video",), ("packsight.label_clips",)
COLUMNS = ("name", "uuid", "state", "routing_key", "worker", "received", "runtime")
# Kept after the run: $PACKSIGHT_TEST_ARTIFACTS, else tests/artifacts/ (git-ignored).
ARTIFACTS = Path(
    os.environ.get("PACKSIGHT_TEST_ARTIFACTS") or Path(__file__).parents[1] / "artifacts"
)
# Headless, and without the background connections (updates, sync, QUIC) that the network here
# refuses; a fresh profile per test.
T = TypeVar("T")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1600,900",
)  # fmt: skip


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[Path, Path]:
    """Debian's Chromium and its driver; their absence fails the test (a skip would hide it)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: this test drives Debian's headless Chromium. Install"
            " it with `apt-get install chromium chromium-driver` (scripts/system-packages.sh"
            " browser, which scripts/test.sh runs)",
            pytrace=False,
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[tuple[str, tuple[str, str]]]:
    """`packsight flower` on the stack's broker, watching its events before the job starts."""
    auth = ("ops", secrets.token_urlsafe(24))
    port = harness.free_port()
    process = harness.ProcessGroup(
        "flower",
        [str(Path(sys.executable).parent / "packsight"), "flower", f"--port={port}",
         "--address=127.0.0.1", f"--tasks_columns={','.join(COLUMNS)}"],
        log_path=tmp_path / "flower.log",
        env=stack.env | {"PACKSIGHT_FLOWER_BASIC_AUTH": ":".join(auth)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def sees_both_workers() -> bool:
        # Workers on this page are known from their heartbeat events: Flower is listening.
        answer = httpx.get(f"{url}/workers?json=1", auth=auth, timeout=5).raise_for_status()
        names = {worker["hostname"].split("@")[0] for worker in answer.json()["data"]}
        return {"cpu", "gpu"} <= names

    try:
        process.wait_until(sees_both_workers, what="seeing the cpu and gpu workers")
        yield url, auth
    finally:
        process.stop()


@pytest.fixture
def chromium(browser_binaries: tuple[Path, Path], tmp_path: Path) -> Iterator[webdriver.Chrome]:
    browser, driver_path = browser_binaries
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # The performance log carries the Network events that give each response's status.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(str(driver_path), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def document_statuses(driver: webdriver.Chrome) -> dict[str, int]:
    """Status of each page the browser loaded since the last call, by URL."""
    statuses = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.responseReceived" and params.get("type") == "Document":
            statuses[params["response"]["url"]] = params["response"]["status"]
    return statuses


def task_rows(driver: webdriver.Chrome) -> list[dict[str, str]]:
    """The Tasks table as shown, a dict of column -> cell text per row."""
    cells = driver.execute_script(
        "return [...document.querySelectorAll('#tasks-table tbody tr')]"
        ".map(row => [...row.cells].map(cell => cell.innerText.trim()))"
    )
    return [dict(zip(COLUMNS, row, strict=False)) for row in cells if len(row) == len(COLUMNS)]


def shows_both_queues(driver: webdriver.Chrome, final: bool) -> list[dict[str, str]] | None:
    """The rows once every task kind is listed on its queue and worker (all succeeded when
    `final`); until then, asks the table for its rows again and returns None."""
    rows = task_rows(driver)
    expected = {name: ("cpu", "cpu@") for name in CPU_TASKS}
    expected |= {name: ("gpu.t4", "gpu@") for name in GPU_TASKS}
    done = all(
        any(
            row["name"] == name
            and row["routing_key"] == queue
            and row["worker"].startswith(worker)
            and (row["state"] == "SUCCESS" or not final)
            for row in rows
        )
        for name, (queue, worker) in expected.items()
    )
    if done and (not final or all(row["state"] == "SUCCESS" for row in rows)):
        return rows
    driver.execute_script("$('#tasks-table').DataTable().ajax.reload(null, false)")
    return None


def wait_for(
    driver: webdriver.Chrome,
    condition: Callable[[webdriver.Chrome], T | Literal[False] | None],
    what: str,
) -> T:
    """Explicit wait (a budget scaled to the machine); on timeout, a screenshot of what the
    browser showed instead and the table's rows in the failure."""
    try:
        result = WebDriverWait(driver, budget(60), poll_frequency=0.5).until(condition)
        assert result is not None  # until() returns only a true value
        return result
    except TimeoutException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "flower-failure.png"))
        raise AssertionError(
            f"Flower never showed {what} at {driver.current_url} (screenshot:"
            f" {ARTIFACTS / 'flower-failure.png'}); task rows: {task_rows(driver)}"
        ) from None


def test_flower_in_chromium_shows_the_cpu_and_gpu_queues_tasks(
    browser_binaries: tuple[Path, Path],
    stack: Stack,
    s3: S3Endpoint,
    flower: tuple[str, tuple[str, str]],
    chromium: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    url, (user, password) = flower
    driver = chromium

    # Without credentials the browser gets 401 and no Flower page.
    driver.get(f"{url}/tasks")
    assert document_statuses(driver).get(f"{url}/tasks") == 401
    assert not driver.find_elements(By.ID, "tasks-table")

    # A real job: 3 short synthetic videos, sampled on `cpu` and labelled on `gpu.t4`.
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    videos = write_synthetic_archive(
        tmp_path / "archive", videos=3, seed=5, min_seconds=5.2, max_seconds=7.5
    )
    for video in videos:
        client.upload_file(str(video.path), BUCKET, f"videos/{Path(video.key).name}")
    with stack.client() as api:
        accepted = api.post("/v1/jobs", json={"bucket": BUCKET, "prefix": "videos/"})
    assert accepted.status_code == 202, accepted.text

    # Logged in (basic auth on every request the page makes, its table's XHR included) while
    # the job runs: the table fills from the workers' events.
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )
    driver.get(f"{url}/tasks")
    assert document_statuses(driver).get(f"{url}/tasks") == 200
    wait_for(
        driver,
        ec.presence_of_element_located((By.CSS_SELECTOR, "#tasks-table tbody tr")),
        "its tasks table",
    )
    driver.execute_script("$('#tasks-table').DataTable().page.len(100).draw()")
    wait_for(driver, lambda d: shows_both_queues(d, final=False), "both queues' tasks")

    with stack.client() as api:
        job = wait_for_final_state(api, accepted.json()["job_id"], timeout_s=budget(120))
    assert job["state"] == "succeeded", job
    rows = wait_for(driver, lambda d: shows_both_queues(d, final=True), "every task succeeded")
    assert {row["routing_key"] for row in rows} == {"cpu", "gpu.t4"}
    assert sum(row["name"] == "packsight.sample_video" for row in rows) == len(videos)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "flower-tasks.png"
    screenshot.unlink(missing_ok=True)
    assert driver.save_screenshot(str(screenshot))
    assert_real_png(screenshot)

    # The Broker page lists both queues (from the workers Flower inspected).
    driver.get(f"{url}/broker")
    for queue in ("cpu", "gpu.t4"):
        row = (By.CSS_SELECTOR, f"#queue-table tbody tr[id='{queue}']")
        wait_for(driver, ec.text_to_be_present_in_element(row, queue), f"queue {queue}")
    driver.save_screenshot(str(ARTIFACTS / "flower-broker.png"))


def assert_real_png(path: Path) -> None:
    """A PNG of the page: the signature, the window's size, and more than a blank page."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    assert len(data) > 20_000, f"{path} is only {len(data)} bytes"
    with Image.open(path) as image:
        assert image.width >= 1000 and image.height >= 600, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, f"{path} is nearly blank"
    print(f"\nscreenshot of Flower's Tasks page: {path} ({len(data)} bytes)")
