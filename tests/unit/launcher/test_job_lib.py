"""The job script's watch functions (job_lib.sh) in real bash: a component that dies while another starts stops
the job with its log tail and its exit code, and the other steps are stopped (no hang until the time limit)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from nemo_spatial.launcher.render import JOB_LIB


def test_a_dying_component_fails_the_job_with_its_log_tail_and_stops_the_rest(tmp_path: Path) -> None:
    survivor = tmp_path / "survivor.pid"
    script = f"""
{JOB_LIB.read_text()}
start_step server {tmp_path}/server.log bash -c 'echo $$ > {survivor}; exec sleep 300'
start_step reward {tmp_path}/reward.log bash -c 'sleep 1; echo "scoring pool crashed: out of memory"; exit 3'
wait_healthy 0 http://127.0.0.1:9/never 60
echo "not reached"
"""
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=90)
    assert result.returncode == 1 and "not reached" not in result.stdout
    assert "reward exited with code 3 before server answered http://127.0.0.1:9/never" in result.stderr
    assert "scoring pool crashed: out of memory" in result.stderr  # the dead component's log tail
    assert time.monotonic() - started < 30
    pid = int(survivor.read_text())
    assert not Path(f"/proc/{pid}").exists(), "the other step was left running"


def test_checkpoint_step_reads_the_latest_pointer(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    run = f"{JOB_LIB.read_text()}\nRUN_DIR={tmp_path}\ncheckpoint_step"
    assert subprocess.run(["bash", "-c", run], capture_output=True, text=True).stdout.strip() == "0"
    (tmp_path / "checkpoints" / "latest").write_text("step_000010\n")
    assert subprocess.run(["bash", "-c", run], capture_output=True, text=True).stdout.strip() == "10"
