"""No process of a run outlives it: `kill -9` of a `--nproc 2` launcher (only the launcher, as an OOM killer or a
user would) after the first checkpoint, then list every process the run had started.

Covers the ranks (they die with the launcher), Megatron's checkpoint write-results Manager and the resource
trackers (they die with their rank), and the vLLM server with its engine (it watches its parent); the run's
shared-memory leftovers are removed by the next start (here: the same cleanup called directly).
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

from nemo_spatial.generation.shm_cleanup import SHM_DIR, ShmTracker
from nemo_spatial.lifetime import die_with_parent

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


@pytest.mark.timeout(1800)  # the first checkpoint took > 15 min at a load average of 45 on the 2-core machine
def test_kill_9_of_the_launcher_leaves_no_process_of_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "orphans"
    command = [
        sys.executable, "-m", "nemo_spatial.train", "--config", "conf/debug/tiny_cpu.yaml", "--nproc", "2",
        f"policy.hf_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=orphans",
        "parallel.tensor_model_parallel_size=2", "logging.wandb_mode=disabled", "logging.tensorboard=false",
        "logging.progress_bar=false", "trainer.total_steps=40", "trainer.save_every=1", "trainer.val_every=0",
        "logging.rollout_sample_every=0", f"data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    log_path = tmp_path / "train.log"
    with log_path.open("w") as log:
        # If pytest itself is killed (its timeout ends the process), the run goes with it.
        tests = os.getpid()
        launcher = subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: die_with_parent(tests)
        )
    try:
        _kill_after_the_first_checkpoint_and_list_survivors(launcher, run_dir, log_path)
    finally:
        if launcher.poll() is None:
            launcher.kill()  # a failed assertion above must not leave the run training
    # What the server's processes used in /dev/shm: what is left of it is removed at the next start.
    for record in (run_dir / "generation").glob("*.shm-files"):
        tracker = ShmTracker(record)
        tracker.clean()
        assert not [name for name in tracker.files if (SHM_DIR / name).exists()]


def _kill_after_the_first_checkpoint_and_list_survivors(
    launcher: subprocess.Popen[bytes], run_dir: Path, log_path: Path
) -> None:
    deadline = time.monotonic() + 1500
    while not (run_dir / "checkpoints" / "latest").exists():
        assert launcher.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.5)
    time.sleep(1.0)  # into the next step
    job = psutil.Process(launcher.pid).children(recursive=True)
    names = [" ".join(p.cmdline()) for p in job]
    # The ranks, their checkpoint write-results Managers, the resource tracker, the vLLM server and its engine.
    assert sum("spawn_main" in n for n in names) >= 4 and any("resource_tracker" in n for n in names), names
    assert any("nemo_spatial.generation.serve" in n for n in names), names
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    _, survivors = psutil.wait_procs(job, timeout=90)
    alive = [p for p in survivors if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline()[:4] for p in alive]
    # The ranks stopped: no checkpoint appears after the kill.
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    time.sleep(5)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == saved
