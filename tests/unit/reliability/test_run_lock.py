"""A run directory is owned by one run: a second trainer fails at once naming the holder; a dead holder's lock
is free."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_spatial.run_lock import LOCK_FILE, RunDirBusyError, RunDirLock

REPO = Path(__file__).resolve().parents[3]
HOLD = (
    "import sys, time; from nemo_spatial.run_lock import RunDirLock; RunDirLock.acquire(sys.argv[1]); "
    "print('held', flush=True); time.sleep(600)"
)


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_frees_the_directory(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunDirBusyError) as refused:
            RunDirLock.acquire(tmp_path)
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "started 20" in message
        assert "run.name" in message  # the fix
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The lock file is still there, naming the dead holder: a stale lock, free to take.
    assert (tmp_path / LOCK_FILE).exists()
    with RunDirLock.acquire(tmp_path) as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()
    with RunDirLock.acquire(tmp_path):  # released on exit: taken again
        pass


@pytest.mark.parametrize(("entry", "config"), [("train", "tiny_cpu"), ("sft", "tiny_cpu_sft")])
def test_train_refuses_a_run_directory_in_use_within_seconds(
    tiny_model_dir: Path, tmp_path: Path, entry: str, config: str
) -> None:
    run_dir = tmp_path / "busy"
    holder = _holder(run_dir)
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", f"nemo_spatial.{entry}", "--config", f"conf/debug/{config}.yaml",
             f"policy.hf_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=busy",
             f"data.cache_dir={tmp_path / 'cache'}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"in use by another run (pid {holder.pid}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run_dir / "config.yaml").exists()  # the holder's files are not replaced
    assert not (run_dir / "logs").exists()  # nor its log appended to: the lock is taken before the console opens it
    assert elapsed < 120, elapsed  # no generation server was started (that alone takes ~30 s here)
