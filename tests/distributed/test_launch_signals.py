"""A local multi-process run (`spawn`, what `train --nproc N` uses) passes SIGTERM/SIGUSR1 on to its workers."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nemo_spatial.parallel.launch import spawn

pytestmark = pytest.mark.distributed


def _wait_for_preemption(rank: int, ready_dir: str) -> str:
    from nemo_spatial.preemption import PreemptionFlag

    flag = PreemptionFlag().install()
    (Path(ready_dir) / f"ready{rank}").touch()
    deadline = time.monotonic() + 60
    while not flag.requested and time.monotonic() < deadline:
        time.sleep(0.05)
    flag.uninstall()
    return flag.signal_name or "no signal within 60 s"


def _signal_parent_when_ready(ready_dir: Path, nprocs: int) -> None:
    deadline = time.monotonic() + 120
    while len(list(ready_dir.glob("ready*"))) < nprocs and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR1)


def test_a_signal_to_the_launcher_reaches_every_worker(tmp_path: Path) -> None:
    sender = threading.Thread(target=_signal_parent_when_ready, args=(tmp_path, 2), daemon=True)
    sender.start()
    assert spawn(_wait_for_preemption, nprocs=2, args=(str(tmp_path),)) == ["SIGUSR1", "SIGUSR1"]
    sender.join(timeout=5)
    # Outside `spawn` the default disposition is back (pytest's own handling of SIGUSR1 is untouched).
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None)
