"""The harness's building blocks: loopback ports and process groups."""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
from harness import ProcessGroup, pid_alive
from harness.process import _bindable

pytestmark = pytest.mark.integration

# A leader with one child; both print their pids, the child inherits the environment.
FAMILY = 'sleep 300 & echo "child=$! leader=$$ colour=$COLOUR"; echo ready; wait'


def start_family(tmp_path: Path) -> tuple[ProcessGroup, int]:
    group = ProcessGroup(
        "family", ["bash", "-c", FAMILY], log_path=tmp_path / "log", env={"COLOUR": "teal"}
    )
    group.wait_until(lambda: "ready" in group.log_tail(), what="ready", timeout_s=30)
    return group, int(group.log_tail().split("child=")[1].split()[0])


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [harness.free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(_bindable(port) for port in ports)


def test_process_group_stop_reaches_children(tmp_path: Path) -> None:
    group, child = start_family(tmp_path)
    group.stop(timeout_s=5)
    assert not pid_alive(group.pid)
    assert not pid_alive(child)


def test_process_group_reports_early_exit_with_log(tmp_path: Path) -> None:
    group = ProcessGroup("crasher", ["bash", "-c", "echo boom; exit 3"], log_path=tmp_path / "log")
    with pytest.raises(harness.ServiceError, match=r"(?s)code 3.*boom"):
        group.wait_until(lambda: False, what="ready", timeout_s=10)
    group.stop()


def test_process_group_times_out_with_last_probe_error(tmp_path: Path) -> None:
    group = ProcessGroup("idler", ["sleep", "300"], log_path=tmp_path / "log")

    def never_ready() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(harness.ServiceError, match="nobody home"):
        group.wait_until(never_ready, what="ready", timeout_s=0.5)
    group.stop()
    assert not pid_alive(group.pid)
