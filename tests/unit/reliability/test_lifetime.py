"""A child that called die_with_parent ends when its parent is SIGKILLed (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[3]
# The parent starts a child that asks to die with it, prints the child's pid, and then waits forever.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import os, time; from nemo_spatial.lifetime import die_with_parent; "
    f"print(die_with_parent({os.getpid()}), flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
how = child.stdout.readline().strip()
print(child.pid, how, flush=True)
time.sleep(600)
"""


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_the_child_dies_with_its_sigkilled_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert parent.stdout is not None
    child_pid, how = parent.stdout.readline().split()
    assert how == "prctl"  # Linux
    assert psutil.pid_exists(int(child_pid))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(int(child_pid)), "the child outlived its parent"


def test_a_child_whose_parent_is_already_gone_stops_at_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from nemo_spatial.lifetime import die_with_parent; die_with_parent(1); print('alive')"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL and "alive" not in done.stdout
