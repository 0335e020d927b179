"""Trainer checkpoints: the step, the data position, every RNG, and the policy's model/optimizer state.

Layout of `<run_dir>/checkpoints/`:
    step_000005/            one complete checkpoint
        trainer_state.pt    step, data-loader state, RNG states (python, numpy, torch), weight version
        policy/             written by the policy (Megatron dist checkpoint of model + optimizer)
        MANIFEST.json       size and BLAKE3 digest of every file above, written just before COMPLETE
        COMPLETE            written last: a directory without it is an interrupted save and is ignored
    latest                  text file naming the newest complete checkpoint, replaced atomically

A save writes into `step_N.tmp/` (the same name on every rank: it is derived from the step alone), marks it
COMPLETE, renames it to `step_N/` and then replaces `latest` with an atomic rename, so a crash at any point
leaves the previous checkpoint intact and `latest` naming a complete one. `keep_last` older checkpoints are
kept; the rest are deleted after a successful save.

Verified on resume (`select_resume_checkpoint`): every file of the manifest must be there with its size and
digest (a truncated or same-size-corrupted shard names its file), and trainer_state.pt must load. A bad
checkpoint is skipped with a warning for the newest intact one; when none is intact the error names
`trainer.resume_from` (pick one) and `trainer.resume=false` (start afresh). Checkpoints written before the
manifest existed are accepted unverified, with a warning. The policy's loader refuses non-finite weights
(models/qwen25_vl/checkpoint.py). BLAKE3 (the `blake3` package, multi-threaded, memory-mapped) because the
digest of a 7B checkpoint with its Adam state (~85-110 GB) must cost seconds, not minutes: 3.1 GB/s on one
core, 4.7 GB/s on two (benchmarks/checkpoint_digest.py).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from nemo_spatial.checkpoint_manifest import MANIFEST_FILE, CheckpointError, verify_manifest, write_manifest

logger = logging.getLogger(__name__)

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
        write_manifest(staging)
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
    path = checkpoint / STATE_FILE
    try:
        raw = torch.load(path, weights_only=False)
        return TrainerState(**raw)
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read ({type(error).__name__}: {error}); the checkpoint is damaged: resume from "
            "another with trainer.resume_from=step_N, or start afresh with trainer.resume=false"
        ) from error


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Every complete checkpoint of the run, oldest first."""
    root = checkpoint_root(run_dir)
    return sorted(p for p in root.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).is_file())


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What is wrong with a complete checkpoint's files (None when intact): the manifest, then the state file."""
    if not (checkpoint / MANIFEST_FILE).is_file():
        logger.warning("%s has no %s (written before checksums were recorded): not verified", checkpoint, MANIFEST_FILE)
    else:
        problem = verify_manifest(checkpoint)
        if problem:
            return problem
    try:
        load_trainer_state(checkpoint)
    except CheckpointError as error:
        return str(error).split("; the checkpoint is damaged")[0]
    return None


def select_resume_checkpoint(run_dir: Path, resume_from: str = "") -> Path | None:
    """The checkpoint to resume: `resume_from` (verified), else the newest intact one, else None when none exists.

    A damaged newest checkpoint is skipped with a warning naming its bad file; when every one is damaged, or the
    requested one is, CheckpointError names the file and the options that choose.
    """
    if resume_from:
        named = Path(resume_from)
        chosen = named if named.is_absolute() or named.exists() else checkpoint_root(run_dir) / resume_from
        if not (chosen / COMPLETE_MARKER).is_file():
            found = ", ".join(p.name for p in complete_checkpoints(run_dir)) or "none"
            raise CheckpointError(
                f"trainer.resume_from={resume_from}: {chosen} is not a complete checkpoint (complete ones in "
                f"{checkpoint_root(run_dir)}: {found})"
            )
        problem = checkpoint_problem(chosen)
        if problem:
            raise CheckpointError(f"trainer.resume_from={resume_from}: {problem}; choose another checkpoint")
        return chosen
    newest = latest_checkpoint(run_dir)
    candidates = complete_checkpoints(run_dir)
    if newest is not None and newest in candidates:  # `latest` first, then the rest newest first
        candidates.remove(newest)
        candidates.append(newest)
    problems: list[str] = []
    for checkpoint in reversed(candidates):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if problems:
                logger.warning(
                    "resuming from %s, the newest intact checkpoint; skipped: %s", checkpoint, "; ".join(problems)
                )
            return checkpoint
        problems.append(problem)
    if problems:
        raise CheckpointError(
            f"no intact checkpoint in {checkpoint_root(run_dir)}: {'; '.join(problems)}. Choose one with "
            "trainer.resume_from=step_N (or a path), or start afresh with trainer.resume=false (or another run.name)"
        )
    return None


def resume_checkpoint(run_dir: Path, resume_from: str = "") -> Path | None:
    """`select_resume_checkpoint` on rank 0 (it reads every byte once), its answer (or its error) on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return select_resume_checkpoint(run_dir, resume_from)
    box: list[tuple[str, str | None]] = [("ok", None)]
    if dist.get_rank() == 0:
        try:
            chosen = select_resume_checkpoint(run_dir, resume_from)
            box[0] = ("ok", None if chosen is None else str(chosen))
        except (CheckpointError, OSError) as error:
            box[0] = ("error", str(error))
    dist.broadcast_object_list(box, src=0)  # type: ignore[arg-type]
    kind, value = box[0]
    if kind == "error":
        raise CheckpointError(value)
    return None if value is None else Path(value)


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
