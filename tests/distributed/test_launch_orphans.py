"""No process of a `--nproc N` run outlives its launcher: kill -9 the launcher, then list what is left.

Also: a worker's UserError reaches the launcher as a UserError (one line), not as the spawn machinery's traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from nemo_spatial.errors import UserError
from nemo_spatial.parallel.launch import spawn

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # ~40 s each on the contended 2-core machine
REPO = Path(__file__).resolve().parents[2]

LAUNCHER = """
import sys, time
from pathlib import Path
from nemo_spatial.parallel.launch import spawn
from tests.distributed.test_launch_orphans import sleeping_worker
if __name__ == "__main__":
    spawn(sleeping_worker, nprocs=2, args=(sys.argv[1],))
"""


def sleeping_worker(rank: int, ready_dir: str) -> None:
    """Stands for a rank that trains on (and has a child of its own, as rank 0 has its servers)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (Path(ready_dir) / f"rank{rank}").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(600)


def refusing_worker(rank: int) -> None:
    if rank == 1:
        raise UserError("policy.hf_path=/x: nothing is there")
    time.sleep(60)  # rank 0 waits (as in a collective) and is terminated by the launcher


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_kill_9_of_the_launcher_takes_its_ranks_with_it(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("rank*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = [int(p.read_text().split()[0]) for p in tmp_path.glob("rank*")]
    assert len(ranks) == 2, "the workers did not start"
    descendants = [child.pid for child in psutil.Process(launcher.pid).children(recursive=True)]
    assert set(ranks) <= set(descendants)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 20
    while _alive(ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(ranks) == [], "ranks outlived their SIGKILLed launcher"
    # Each rank's own child is not a rank: this shows where the rank's duty ends (servers watch their parent).
    grandchildren = [int(p.read_text().split()[1]) for p in tmp_path.glob("rank*")]
    for pid in _alive(grandchildren):
        os.kill(pid, signal.SIGKILL)
    # Everything else the launcher had started (torch's resource tracker among them) is gone too.
    others = [pid for pid in descendants if pid not in ranks and pid not in grandchildren]
    deadline = time.monotonic() + 20
    while _alive(others) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(others) == [], [psutil.Process(p).cmdline() for p in _alive(others)]


def test_a_worker_user_error_reaches_the_launcher_as_one_line() -> None:
    with pytest.raises(UserError, match=r"^rank 1: policy.hf_path=/x: nothing is there$"):
        spawn(refusing_worker, nprocs=2)
