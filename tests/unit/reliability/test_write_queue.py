"""Megatron's checkpoint write-results Manager (and the resource tracker behind it) dies with a SIGKILLed rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[3]
RANK = """
import os, time, psutil
from megatron.core.dist_checkpointing.strategies.filesystem_async import get_write_results_queue
from nemo_spatial.models.qwen25_vl.write_queue import install_write_results_queue, manager_pid
queue = install_write_results_queue()
assert get_write_results_queue() is queue  # Megatron's writer gets ours
queue.put("ok"); assert queue.get() == "ok"
print(" ".join(str(c.pid) for c in psutil.Process().children(recursive=True)), "/", manager_pid(), flush=True)
time.sleep(600)
"""


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow  # importing Megatron-Core and starting the manager: ~70 s on the contended 2-core machine
def test_the_write_results_manager_and_its_tracker_die_with_a_killed_rank() -> None:
    rank = subprocess.Popen(
        [sys.executable, "-c", RANK], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert rank.stdout is not None
    children, manager = rank.stdout.readline().split("/")
    descendants = [int(pid) for pid in children.split()]
    assert int(manager) in descendants and len(descendants) >= 2  # the manager and the resource tracker
    rank.send_signal(signal.SIGKILL)
    rank.wait()
    deadline = time.monotonic() + 20
    while _alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(descendants) == [], [psutil.Process(p).cmdline()[:3] for p in _alive(descendants)]
