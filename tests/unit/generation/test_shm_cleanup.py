"""Shared-memory files a server's processes used are removed after they died without cleaning up; another
process's files (live or leaked, but never seen used by the server) are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

from nemo_spatial.generation.shm_cleanup import SHM_DIR, ShmTracker

# A stand-in for a vLLM engine: a SharedMemory segment and a multiprocessing semaphore, in a process whose
# resource tracker dies with it (killpg), so neither is cleaned up -- what an abnormal end leaves.
SERVER = """
import multiprocessing as mp, time
from multiprocessing import shared_memory
segment = shared_memory.SharedMemory(create=True, size=4096)
lock = mp.get_context("spawn").Lock()
print(segment.name, flush=True)
time.sleep(600)
"""


def _start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_a_killed_servers_segments_are_removed_and_nobody_elses(tmp_path: Path) -> None:
    others_live = shared_memory.SharedMemory(create=True, size=4096)  # another run's, in use
    others_leaked = SHM_DIR / f"psm_not_ours_{os.getpid()}"  # leaked by someone else, never seen used by the server
    others_leaked.write_bytes(b"x")
    server, segment = _start_server()
    try:
        tracker = ShmTracker(tmp_path / "server.log.shm-files")
        tracker.observe(server.pid)
        semaphores = [n for n in tracker.names if n.startswith("sem.mp-")]
        assert segment in tracker.names and semaphores, tracker.names
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(0.5)
        assert (SHM_DIR / segment).exists()  # leaked: nobody cleaned up
        # A new tracker on the same record (the next start after a SIGKILLed trainer) knows what to remove.
        removed = ShmTracker(tmp_path / "server.log.shm-files").clean()
        assert set(removed) == {segment, *semaphores}
        assert not (SHM_DIR / segment).exists()
        assert all(not (SHM_DIR / name).exists() for name in semaphores)
        assert (SHM_DIR / others_live.name).exists() and others_leaked.exists()
    finally:
        others_live.close()
        others_live.unlink()
        others_leaked.unlink(missing_ok=True)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)


def test_a_segment_still_in_use_is_kept_even_when_recorded(tmp_path: Path) -> None:
    server, segment = _start_server()
    try:
        tracker = ShmTracker(tmp_path / "record")
        tracker.observe(server.pid)
        assert tracker.clean() == []  # the server still maps it
        assert (SHM_DIR / segment).exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
