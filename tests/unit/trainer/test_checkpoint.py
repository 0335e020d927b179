"""Trainer checkpoints are atomic, prune old ones, and restore RNG and data position exactly."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nemo_spatial.checkpoint import (
    TrainerState,
    capture_rng_state,
    latest_checkpoint,
    load_trainer_state,
    restore_rng_state,
    save_checkpoint,
)
from nemo_spatial.preemption import PreemptionFlag


def _policy_writer(payload):
    def save(path):
        path.mkdir(parents=True)
        (path / "weights.txt").write_text(payload)

    return save


def test_save_load_round_trip_and_rng(tmp_path):
    torch.manual_seed(3)
    state = TrainerState(step=5, weight_version=5, data_state={"epoch": 1, "index": 17}, rng_state=capture_rng_state())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path, state, _policy_writer("w5"))
    loaded = load_trainer_state(latest_checkpoint(tmp_path))
    assert (loaded.step, loaded.weight_version, loaded.data_state) == (5, 5, {"epoch": 1, "index": 17})
    restore_rng_state(loaded.rng_state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert (latest_checkpoint(tmp_path) / "policy" / "weights.txt").read_text() == "w5"


def test_keeps_the_last_n_and_ignores_interrupted_saves(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, TrainerState(step=step), _policy_writer(f"w{step}"), keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step_000002", "step_000003"]

    def crash(path):
        path.mkdir(parents=True)
        raise RuntimeError("node died mid-save")

    with pytest.raises(RuntimeError, match="mid-save"):
        save_checkpoint(tmp_path, TrainerState(step=4), crash)
    assert latest_checkpoint(tmp_path).name == "step_000003"  # the half-written step_000004.tmp is ignored
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step_000003"  # found by scanning complete directories


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    """A process killed with SIGKILL while writing its policy state: the last good checkpoint survives."""
    save_checkpoint(tmp_path, TrainerState(step=1), _policy_writer("w1"))
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from nemo_spatial.checkpoint import TrainerState, save_checkpoint
        def save(path):
            path.mkdir(parents=True)
            (path / "partial").write_text("x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        save_checkpoint(Path({str(tmp_path)!r}), TrainerState(step=2), save)
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == -signal.SIGKILL
    best = latest_checkpoint(tmp_path)
    assert best.name == "step_000001" and (best / "policy" / "weights.txt").read_text() == "w1"


def test_preemption_flag_is_set_by_sigusr1_and_sigterm():
    flag = PreemptionFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.requested and flag.signal_name == "SIGUSR1"
    finally:
        flag.uninstall()
    flag = PreemptionFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == "SIGTERM"
    finally:
        flag.uninstall()
