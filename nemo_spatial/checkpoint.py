"""Trainer checkpoints: the step, the data position, every RNG, and the policy's model/optimizer state.

Layout of `<run_dir>/checkpoints/`:
    step_000005/            one complete checkpoint
        trainer_state.pt    step, data-loader state, RNG states (python, numpy, torch), weight version
        policy/             written by the policy (Megatron dist checkpoint of model + optimizer)
        COMPLETE            written last: a directory without it is an interrupted save and is ignored
    latest                  text file naming the newest complete checkpoint, replaced atomically

A save writes into `step_N.tmp/` (the same name on every rank: it is derived from the step alone), marks it
COMPLETE, renames it to `step_N/` and then replaces `latest` with an atomic rename, so a crash at any point
leaves the previous checkpoint intact and `latest` naming a complete one. `keep_last` older checkpoints are
kept; the rest are deleted after a successful save.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.pt"
POLICY_DIR = "policy"


@dataclass
class TrainerState:
    """Everything besides the policy that a resumed run needs to continue exactly."""

    step: int = 0
    weight_version: int = 0
    data_state: dict[str, Any] = field(default_factory=dict)
    rng_state: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    save_policy: Callable[[Path], None],
    keep_last: int = 2,
    is_writer: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Save atomically; every rank calls it (the policy save is collective), rank `is_writer` writes state.

    The temporary directory name must be the same on every rank, so it is derived from the step alone.
    """
    root = checkpoint_root(run_dir)
    final = root / f"step_{state.step:06d}"
    staging = root / f"step_{state.step:06d}.tmp"
    if is_writer:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    save_policy(staging / POLICY_DIR)
    barrier()
    if is_writer:
        torch.save(state.__dict__, staging / STATE_FILE)
        (staging / COMPLETE_MARKER).write_text(f"step {state.step}\n")
        _fsync_dir(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        _write_atomically(root / "latest", final.name + "\n")
        _prune(root, keep_last)
    barrier()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None. Falls back to scanning when `latest` is missing or stale."""
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / COMPLETE_MARKER).is_file():
            return named
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).is_file())
    return complete[-1] if complete else None


def load_trainer_state(checkpoint: Path) -> TrainerState:
    raw = torch.load(checkpoint / STATE_FILE, weights_only=False)
    return TrainerState(**raw)


def _prune(root: Path, keep_last: int) -> None:
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).is_file())
    for old in complete[: max(0, len(complete) - keep_last)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
