"""Distributed (torch_dist) checkpoints of the policy's model and optimizer: resumable, reshardable, atomic.

    save_policy_checkpoint(path, chunks, optimizer, scheduler, layout, step)   # every rank
    info = load_policy_checkpoint(path, chunks, optimizer, scheduler, layout)  # every rank

Format: Megatron-Core `dist_checkpointing` (torch_dist): each rank writes its own shards; the model's sharded
state dict describes every tensor by its global shape and offset, so the model loads into any TP / PP / DP
layout (save at TP=2, load at TP=1 or PP=2). The distributed optimizer is saved as "dp_reshardable" (the
format that works on gloo; ../shared/docs/stack-notes.md): it reloads under any DP size but only at the TP x PP
it was saved with, as in Megatron-LM. Loading at another TP/PP therefore restores the model only (a warning
says so); `load_optimizer=True` makes that an error instead. ("fully_reshardable" would reshard the optimizer
too, but megatron-core 0.19.2 cannot load it into torch's AdamW, the optimizer without Apex / Transformer
Engine: its loader re-adds the per-parameter `step` and then looks that key up in the checkpoint; measured.)
The optimizer state also loads only into the same kind of optimizer (`use_distributed_optimizer`, recorded in
the marker file); another kind loads the model only, with a warning that says why.

Adam's step count is recorded apart from the policy's step ("optimizer_step"): they differ once a run resumed
with the model only (its Adam starts again at 0 while the policy step continues), and Adam's bias correction
needs its own count. A model-only load resets Adam to that fresh state (zero moments, step 0) rather than keep
moments that belong to other weights.

Atomic: shards go to `<path>.partial/`; after every rank has finished, rank 0 writes `nemo_spatial_policy.json`
(layout, step, optimizer step, scheduler state) and renames the directory to `<path>` (an existing `<path>` is
moved aside first and deleted only after the new one is in place). A crash mid-save leaves `<path>` as it was; a
directory without the marker file is refused on load.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_spatial.models.qwen25_vl.optimizer import sub_optimizers
from nemo_spatial.models.qwen25_vl.write_queue import install_write_results_queue
from nemo_spatial.parallel.layout import Layout

MARKER = "nemo_spatial_policy.json"
OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "dp_reshardable"}
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
logger = logging.getLogger(__name__)


def _model_key(index: int, count: int) -> str:
    return "model" if count == 1 else f"model{index}"


def _sharded_state(chunks: list[Any], optimizer: Any | None, *, is_loading: bool) -> dict[str, Any]:
    """The model's (unwrapped from DDP / Float16Module, as Megatron-LM does) and the optimizer's sharded state."""
    from megatron.core.utils import unwrap_model

    modules = unwrap_model(chunks)
    state: dict[str, Any] = {_model_key(i, len(modules)): m.sharded_state_dict() for i, m in enumerate(modules)}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=is_loading, metadata=OPTIMIZER_SHARDING)
    return state


def save_policy_checkpoint(
    path: str | Path, chunks: list[Any], optimizer: Any, scheduler: Any, layout: Layout, step: int
) -> Path:
    """Write model + optimizer shards of every rank into `path`, atomically (collective: call on every rank)."""
    from megatron.core import dist_checkpointing

    final = Path(path)
    staging = final.with_name(final.name + ".partial")
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    install_write_results_queue()  # before Megatron makes its own, which would outlive a killed rank
    dist_checkpointing.save(_sharded_state(chunks, optimizer, is_loading=False), str(staging))
    optimizer_step = _global_adam_step_count(optimizer)
    dist.barrier()
    if rank == 0:
        info = {
            "step": step,
            "optimizer_step": step if optimizer_step is None else optimizer_step,
            "tensor": layout.tensor,
            "pipeline": layout.pipeline,
            "data": layout.data,
            "optimizer_sharding": OPTIMIZER_SHARDING["distrib_optim_sharding_type"],
            "distributed_optimizer": uses_distributed_optimizer(optimizer),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
        }
        (staging / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        _replace_directory(staging, final)
    dist.barrier()
    return final


def _replace_directory(staging: Path, final: Path) -> None:
    previous = final.with_name(final.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def _inner_optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers that Megatron's optimizers wrap (torch AdamW on the CPU, FusedAdam with TE / Apex)."""
    inners = (getattr(sub, "optimizer", None) for sub in sub_optimizers(optimizer))
    return [inner for inner in inners if isinstance(inner, torch.optim.Optimizer)]


def adam_step_count(optimizer: Any) -> int | None:
    """How many steps this rank's Adam has taken (None when it holds no parameter).

    torch AdamW counts per parameter, FusedAdam per parameter group.
    """
    steps: list[int] = []
    for inner in _inner_optimizers(optimizer):
        steps += [int(state["step"]) for state in inner.state.values() if "step" in state]
        steps += [int(group["step"]) for group in inner.param_groups if "step" in group and group["params"]]
    return max(steps) if steps else None


def _global_adam_step_count(optimizer: Any) -> int | None:
    """`adam_step_count` over every rank (collective): a distributed optimizer's rank may own no parameter."""
    counts: list[int | None] = [None] * dist.get_world_size()
    dist.all_gather_object(counts, adam_step_count(optimizer))
    known = [count for count in counts if count is not None]
    return max(known) if known else None


def _restore_adam_step_counters(optimizer: Any, step: int) -> None:
    """One step counter per parameter again, at the saved optimizer step (torch AdamW, the CPU path).

    Megatron's distributed optimizer loads torch AdamW's per-parameter `step` as ONE tensor shared by every
    parameter (its Apex / Transformer Engine FusedAdam keeps the step per group instead, restored as saved), so
    each later step would advance it once per parameter and skew AdamW's bias correction.
    """
    for inner in _inner_optimizers(optimizer):
        if isinstance(inner, torch.optim.AdamW | torch.optim.Adam):
            for state in inner.state.values():
                if "step" in state:
                    state["step"] = torch.tensor(float(step))


def _reset_adam_states(optimizer: Any) -> None:
    """Adam as freshly built: zero moments, step 0 (what a model-only load leaves, whatever ran before it)."""
    for inner in _inner_optimizers(optimizer):
        for state in inner.state.values():
            for key in ADAM_MOMENTS:
                if isinstance(state.get(key), torch.Tensor):
                    state[key].zero_()
        for group in inner.param_groups:  # FusedAdam's count
            if "step" in group:
                group["step"] = 0
    _restore_adam_step_counters(optimizer, 0)  # torch AdamW's per-parameter counts


def refuse_non_finite_weights(path: str | Path, modules: list[Any]) -> None:
    """Raise on every rank when any rank loaded a NaN or infinite weight (collective; one pass over the shard).

    A diverged run saves such weights with valid checksums; resuming them would fail far away (the generation
    server's JSON cannot carry NaN log-probs), so the checkpoint is refused here, naming a parameter.
    """
    from nemo_spatial.checkpoint_manifest import CheckpointError

    bad = ""
    for module in modules:
        for name, param in module.named_parameters():
            if not bool(torch.isfinite(param).all()):
                bad = name
                break
        if bad:
            break
    found: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(found, f"rank {dist.get_rank()}: {bad}" if bad else "")
    where = next((item for item in found if item), "")
    if where:
        raise CheckpointError(
            f"{path} holds non-finite weights ({where} has NaN or inf): the run diverged before it was saved; "
            "resume from an earlier checkpoint with trainer.resume_from=step_N, or start afresh with "
            "trainer.resume=false"
        )


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    marker = Path(path) / MARKER
    if not marker.is_file():
        raise FileNotFoundError(
            f"{path} is not a complete policy checkpoint (no {MARKER}; an interrupted save leaves "
            f"`{Path(path).name}.partial`); load the previous checkpoint"
        )
    return json.loads(marker.read_text())  # type: ignore[no-any-return]


def resolve_init_checkpoint(location: str | Path) -> Path:
    """The policy checkpoint directory that `policy.init_checkpoint=location` names.

    Accepted: a policy directory (holding the marker file), a trainer checkpoint `step_N/` (its `policy/`), or
    a run directory (its `checkpoints/latest`). Anything else is a ConfigError that says what was found. The
    checkpoint's manifest is verified as on resume (`verified_init_checkpoint`).
    """
    from nemo_spatial.checkpoint import POLICY_DIR, latest_checkpoint
    from nemo_spatial.errors import ConfigError

    path = Path(location)
    if (path / MARKER).is_file():
        return verified_init_checkpoint(path, location)
    if (path / POLICY_DIR / MARKER).is_file():
        return verified_init_checkpoint(path / POLICY_DIR, location)
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is not None and (latest / POLICY_DIR / MARKER).is_file():
            return verified_init_checkpoint(latest / POLICY_DIR, location)
    raise ConfigError(
        f"policy.init_checkpoint={str(location)!r} is not a policy checkpoint: expected a run directory (with "
        f"checkpoints/latest), a checkpoint directory step_N/ (with policy/), or a policy/ directory (with {MARKER})"
    )


def verified_init_checkpoint(policy_dir: Path, location: str | Path) -> Path:
    """`policy_dir` when its trainer checkpoint's MANIFEST.json (step_N/, its parent) holds for every file, as
    resume checks it; a missing, truncated or changed file is a CheckpointError naming policy.init_checkpoint and
    the file. Rank 0 reads every byte once and tells the other ranks. A policy directory outside a checkpoint
    with a manifest (copied out by hand, or saved before manifests) loads unverified, with a warning."""
    from nemo_spatial.checkpoint_manifest import MANIFEST_FILE, CheckpointError, verify_manifest

    checkpoint = policy_dir.parent
    if not (checkpoint / MANIFEST_FILE).is_file():
        logger.warning("policy.init_checkpoint: %s has no %s: not verified", checkpoint, MANIFEST_FILE)
        return policy_dir
    several = dist.is_initialized() and dist.get_world_size() > 1
    box: list[str | None] = [verify_manifest(checkpoint) if not several or dist.get_rank() == 0 else None]
    if several:
        dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CheckpointError(
            f"policy.init_checkpoint={str(location)!r}: {box[0]}; the checkpoint is damaged: point "
            "policy.init_checkpoint at another checkpoint (a step_N/ directory of the run) or re-create it"
        )
    return policy_dir


def uses_distributed_optimizer(optimizer: Any) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(isinstance(sub, DistributedOptimizer) for sub in sub_optimizers(optimizer))


def optimizer_unloadable(info: dict[str, Any], layout: Layout, distributed: bool) -> str | None:
    """Why the optimizer state saved with `info` cannot load into this run's optimizer (None when it can).

    The distributed optimizer reshards only over DP, and its state has another structure than the plain
    optimizer's (torch's checkpoint reader fails on it: a CheckpointException wrapping a KeyError about a
    missing `optimizer.state...` key). Checkpoints from before the optimizer kind was recorded are assumed to
    match.
    """
    if (info["tensor"], info["pipeline"]) != (layout.tensor, layout.pipeline):
        return (
            f"it holds optimizer state for TP={info['tensor']} PP={info['pipeline']} and this run is "
            f"TP={layout.tensor} PP={layout.pipeline}; the distributed optimizer reshards only over DP: resume "
            "with the saved TP and PP"
        )
    saved = info.get("distributed_optimizer")
    if saved is not None and bool(saved) != distributed:
        return (
            f"it was saved with policy.optimizer.use_distributed_optimizer={str(bool(saved)).lower()} and this run "
            f"has {str(distributed).lower()}: resume with policy.optimizer.use_distributed_optimizer="
            f"{str(bool(saved)).lower()}"
        )
    return None


def load_policy_checkpoint(
    path: str | Path,
    chunks: list[Any],
    optimizer: Any | None,
    scheduler: Any | None,
    layout: Layout,
    load_optimizer: bool | None = None,
) -> dict[str, Any]:
    """Load the model (any layout) and, when the TP x PP layout matches, the optimizer and schedule."""
    from megatron.core import dist_checkpointing
    from megatron.core.utils import unwrap_model

    info = read_checkpoint_info(path)
    unloadable = (
        None if optimizer is None else optimizer_unloadable(info, layout, uses_distributed_optimizer(optimizer))
    )
    if load_optimizer and unloadable:
        raise RuntimeError(f"cannot restore the optimizer state of {path}: {unloadable}, or load the model only")
    with_optimizer = optimizer is not None and load_optimizer is not False and not unloadable
    if optimizer is not None and not with_optimizer:
        logger.warning("loading the model only from %s: %s", path, unloadable or "optimizer state not requested")
    sharded = _sharded_state(chunks, optimizer if with_optimizer else None, is_loading=True)
    with torch.no_grad():
        state = dist_checkpointing.load(sharded, str(path))
        for i, module in enumerate(unwrap_model(chunks)):
            module.load_state_dict(state[_model_key(i, len(chunks))])
        refuse_non_finite_weights(path, unwrap_model(chunks))
        if with_optimizer and optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        elif optimizer is not None:
            optimizer.reload_model_params()  # the optimizer's fp32 main copies follow the loaded weights
    if with_optimizer:
        # Checkpoints from before "optimizer_step" was recorded: the policy step, right unless that run had
        # itself resumed with the model only.
        _restore_adam_step_counters(optimizer, int(info.get("optimizer_step", info["step"])))
    elif optimizer is not None:
        _reset_adam_states(optimizer)
    if with_optimizer and scheduler is not None and info.get("scheduler"):
        scheduler.load_state_dict(info["scheduler"])
    info["optimizer_loaded"] = bool(with_optimizer)
    return info
