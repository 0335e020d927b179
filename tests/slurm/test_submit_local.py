"""submit.py on a real SLURM: the tiny CPU recipe, bare metal, preempted mid-run, requeued, resumed, finished.

One scenario checks the whole train job: the reward service and the vLLM server start as their own steps and
pass their health checks, the trainer gets their URLs and trains; SIGUSR1 to the job's steps (what
`--signal=USR1@S` sends before the time limit) makes the trainer checkpoint and exit, the batch script sees the
run unfinished and requeues it, the restart (its logs in restart_1/) resumes from that checkpoint and reaches
the last step, and the job completes. SLURM holds a requeued job ~2 min before it is eligible again; the test
releases it at once (`scontrol update StartTime=now`) to stay short.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def _job(env: dict[str, str], job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def _wait(predicate, what: str, timeout_s: float, logs: Path, ended=lambda: False) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline or ended():
            tails = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*.log")))
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(2)


@pytest.mark.timeout(1500)
def test_train_job_is_preempted_requeued_resumed_and_finishes(
    local_slurm: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    env, logs = local_slurm, tmp_path / "slurm-logs"
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "_base_: " + str(REPO / "conf" / "cluster" / "localhost.yaml") + "\n"
        f"venv: {sys.prefix}\nrepo_dir: {REPO}\nlog_dir: {logs}\n"
        f"env:\n  PYTHONPATH: {REPO}\n  OMP_NUM_THREADS: '1'\n"
    )
    overrides = [
        f"policy.hf_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=slurm", "trainer.total_steps=4",
        "trainer.save_every=0", "trainer.val_every=0", "logging.rollout_sample_every=0", "logging.tensorboard=false",
        "logging.wandb_mode=disabled", "logging.progress_bar=false", f"data.cache_dir={tmp_path / 'cache'}",
        "launch.generation_servers=1", "reward_service.mode=remote", "launch.reward_cpus=1",
        "launch.step_time_s=60", "launch.save_time_s=30",
    ]  # fmt: skip
    submit = [sys.executable, "launcher/submit.py", "--recipe", "conf/debug/tiny_cpu.yaml", "--cluster", str(cluster)]
    out = subprocess.run([*submit, *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[2]
    assert f"follow:    tail -F {logs}/slurm/sbatch-{job_id}.log" in out.stdout
    run_dir, metrics = tmp_path / "slurm", tmp_path / "slurm" / "metrics.jsonl"

    # Mid-run: the first step is logged; the early-warning signal goes to every step (not the batch shell).
    ended = lambda: _job(env, job_id).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED")  # noqa: E731
    _wait(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1, "step 1", 900, logs, ended)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
    _wait(lambda: _job(env, job_id).get("Restarts") == "1", "the requeue", 300, logs)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
    _wait(ended, "the end", 900, logs)

    job_logs = logs / "slurm" / job_id
    batch = (logs / "slurm" / f"sbatch-{job_id}.log").read_text()
    assert _job(env, job_id)["JobState"] == "COMPLETED", batch
    # The first run stopped early with a checkpoint of its step, was requeued, and the restart resumed from it.
    assert "(preemption): requeueing" in batch and "done: step 4 of 4" in batch, batch
    first, second = (job_logs / "restart_0" / "trainer.log").read_text(), (job_logs / "restart_1" / "trainer.log")
    assert "checkpoint saved" in first, first[-3000:]
    resumed = [line for line in second.read_text().splitlines() if "resumed from" in line]
    assert resumed and "step_00000" in resumed[0], second.read_text()[-3000:]
    for name in ("reward", "generation_0"):
        assert (job_logs / "restart_1" / f"{name}.log").is_file(), name
    assert "ready at http://" in batch
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000004"
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4], steps  # each step once: the restart continued, it did not start over
