"""Running the real `packsight` command the way a user does: as a subprocess, its output
captured, or with stderr on a terminal (where progress bars are drawn)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import budget

PACKSIGHT = str(Path(sys.executable).parent / "packsight")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PACKSIGHT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=budget(600)
    )


def run_on_a_terminal(
    args: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str]:
    """run(), with stderr on a pseudo-terminal 160 columns wide (where progress bars are
    drawn); returns the result and what the terminal showed."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the command exited and closed the terminal
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with subprocess.Popen(
        [PACKSIGHT, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=follower, text=True
    ) as process:
        os.close(follower)
        stdout, _ = process.communicate(timeout=budget(600))
    reader.join(budget(30))
    os.close(leader)
    terminal = b"".join(shown).decode(errors="replace")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, ""), terminal
