"""The harness's building blocks: loopback ports and process groups, with their faults."""

from __future__ import annotations

import signal
import threading
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
    assert group.children() == [child]
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


def test_kill_leader_leaves_its_children_running_as_orphans(tmp_path: Path) -> None:
    group, child = start_family(tmp_path)
    try:
        group.kill_leader()
        assert not pid_alive(group.pid)
        assert pid_alive(child)
        assert group.children() == [child]  # still in the group, so stop() reaches it
        ppid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid != group.pid  # re-parented, as after a real `kill -9`
    finally:
        group.stop(timeout_s=5)
    assert not pid_alive(child)
    assert group.children() == []


def test_kill_stops_the_whole_group_at_once(tmp_path: Path) -> None:
    group, child = start_family(tmp_path)
    group.kill(timeout_s=5)
    assert group.process.returncode == -signal.SIGKILL  # no polite signal first
    assert not pid_alive(group.pid) and not pid_alive(child)


def test_restart_runs_the_same_command_with_the_same_log_and_env(tmp_path: Path) -> None:
    group, child = start_family(tmp_path)
    first_leader = group.pid
    try:
        group.kill_leader()
        group.restart()
        assert not pid_alive(child)  # the orphan went with the old group
        group.wait_until(lambda: "ready" in group.log_tail(), what="ready", timeout_s=30)
        assert group.pid != first_leader
        assert len(group.children()) == 1 and group.children() != [child]
        # log_tail() shows this run only; the file keeps both, each with the same environment.
        assert group.log_tail().count("child=") == 1
        log = group.log_path.read_text()
        assert log.count("colour=teal") == 2
        assert "--- family restarted ---" in log
        group.restart()  # a live leader is stopped politely, then started again
        group.wait_until(lambda: "ready" in group.log_tail(), what="ready", timeout_s=30)
        assert group.log_path.read_text().count("colour=teal") == 3
    finally:
        group.stop(timeout_s=5)
    assert group.children() == []


def test_services_start_only_from_the_main_thread(tmp_path: Path) -> None:
    errors: list[Exception] = []

    def start() -> None:
        try:
            ProcessGroup("threaded", ["sleep", "300"], log_path=tmp_path / "log").stop()
        except harness.ServiceError as error:
            errors.append(error)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(30)
    assert len(errors) == 1 and "main thread" in str(errors[0])
