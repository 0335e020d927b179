"""Megatron checkpoint -> Hugging Face model directory, through Megatron-Bridge (the Megatron half of the export).

    spawn(export_worker, nprocs=N, args=(request,))    # or export_worker(0, request) in this process
    policy.export_hf(checkpoint)                        # the trainer: the weights it holds, next to a checkpoint

A checkpoint saved at any TP / PP / DP layout loads here at TP = the number of export processes (1 by
default) and PP = 1: the torch_dist format stores every tensor by its global shape (checkpoint.py), so the
model-only load reshards. The model skeleton comes from the base model's config (random init, no HF weights
read); before loading, every tensor's global shape in the checkpoint's metadata is compared with the
skeleton's, so a wrong base model is named with the first mismatching tensor instead of failing deep in
torch.distributed.checkpoint. The bridge then gathers full HF tensors (`export_hf_weights`) on every rank and
rank 0 casts and writes them (files.ShardWriter) into a staging folder that is renamed when complete.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from nemo_spatial.errors import UserError
from nemo_spatial.export.card import model_card
from nemo_spatial.export.files import (
    ShardWriter,
    base_weights,
    copy_base_files,
    folder_bytes,
    staged_output,
    torch_dtype,
)
from nemo_spatial.export.source import ExportSource, default_output, resolve_source


@dataclass(frozen=True)
class ExportRequest:
    """What `tools/megatron_to_hf.py` asks every export process to do."""

    source: ExportSource
    out: Path
    dtype: str
    overwrite: bool = False
    check: bool = False
    check_only: bool = False  # check an existing export; write nothing
    max_shard_bytes: int = 5 * 1000**3
    command: tuple[str, ...] = ()
    show_progress: bool = True


@dataclass(frozen=True)
class ExportResult:
    out: Path
    tensors: int
    nbytes: int  # the output folder's size on disk
    seconds: float  # conversion and writing (model build and checkpoint load excluded)
    load_seconds: float
    check: Any = None  # hf_check.CheckReport when --check ran


def export_worker(rank: int, request: ExportRequest) -> ExportResult | None:
    """One export process (spawn target): build, load the checkpoint, write (rank 0), check; rank 0's result."""
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig
    from nemo_spatial.parallel.state import initialize

    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    parallel = ParallelConfig(tensor_model_parallel_size=world)
    cpu_compat.activate(parallel)  # the CPU mode (gloo, no GPU) before anything Megatron is built
    state = initialize(parallel, seed=1)
    started = time.perf_counter()
    loaded = load_checkpoint_model(request.source, state.layout)
    load_seconds = time.perf_counter() - started
    result = ExportResult(request.out, 0, folder_bytes(request.out), 0.0, load_seconds)
    if not request.check_only:
        card = model_card(request.source, request.dtype, list(request.command))
        result = write_export(
            loaded.chunks, loaded.bridge, request.source.base, request.out, request.dtype, card,
            overwrite=request.overwrite, max_shard_bytes=request.max_shard_bytes, show_progress=request.show_progress,
        )  # fmt: skip
        result = ExportResult(result.out, result.tensors, result.nbytes, result.seconds, load_seconds)
    if request.check or request.check_only:
        from nemo_spatial.models.qwen25_vl.hf_check import check_export

        report = check_export(request.out, loaded.chunks, request.dtype)
        result = ExportResult(result.out, result.tensors, result.nbytes, result.seconds, load_seconds, report)
    return result if state.rank == 0 else None


def load_checkpoint_model(source: ExportSource, layout: Any) -> Any:
    """The model of the base's shape at `layout`, with the checkpoint's weights (model only, any saved layout)."""
    from nemo_spatial.models.qwen25_vl.bridge import load_model
    from nemo_spatial.models.qwen25_vl.checkpoint import load_policy_checkpoint
    from nemo_spatial.models.qwen25_vl.config import PolicyConfig

    policy = source.run_config.get("policy", {})
    precision = str(policy.get("precision", "auto"))
    cfg = PolicyConfig(
        hf_path=str(source.base), precision=precision, max_seq_length=int(policy.get("max_seq_length", 8192))
    )
    loaded = load_model(cfg, layout, ddp_config=None, hf_path=str(source.base), load_weights=False)
    check_shapes(source, loaded.chunks)
    load_policy_checkpoint(source.policy_dir, loaded.chunks, None, None, layout)
    return loaded


def check_shapes(source: ExportSource, chunks: list[Any]) -> None:
    """UserError naming the first tensor whose global shape differs between the checkpoint and the base model."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor
    from megatron.core.utils import unwrap_model
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    saved = FileSystemReader(str(source.policy_dir)).read_metadata().state_dict_metadata
    for module in unwrap_model(chunks):
        for sharded in nested_values(module.sharded_state_dict()):
            if not isinstance(sharded, ShardedTensor):
                continue
            expected = tuple(sharded.global_shape)
            meta = saved.get(sharded.key)
            found = tuple(meta.size) if isinstance(meta, TensorStorageMetadata) else None
            if found != expected:
                raise UserError(
                    f"the base model {source.base} does not match the checkpoint {source.policy_dir}: tensor "
                    f"{sharded.key} is {list(found) if found else 'missing'} in the checkpoint and "
                    f"{list(expected)} in the base model; pass --base DIR with the model the run was trained from"
                )


def write_export(
    chunks: list[Any],
    bridge: Any,
    base: Path,
    out: Path,
    dtype: str,
    card: str,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = 5 * 1000**3,
    show_progress: bool = True,
) -> ExportResult:
    """Stream the model's HF tensors (collective: every rank) and write the export on rank 0."""
    writer_rank = not dist.is_initialized() or dist.get_rank() == 0
    expected = base_weights(base).shapes
    started = time.perf_counter()
    stream = bridge.export_hf_weights(chunks, cpu=True, show_progress=False)
    count = 0
    if writer_rank:
        from tqdm import tqdm

        with staged_output(out, overwrite) as staging:
            writer = ShardWriter(staging, max_shard_bytes)
            bar = tqdm(
                stream, total=len(expected), unit="tensor", desc="export", disable=not show_progress, file=sys.stderr
            )
            for name, tensor in bar:
                _check_exported(name, tuple(tensor.shape), expected)
                writer.add(name, tensor.to(torch_dtype(dtype)))
                count += 1
            missing = sorted(set(expected) - {n for _, names in writer.shards for n in names} - set(writer.pending))
            if missing:
                raise RuntimeError(f"the export lacks {len(missing)} tensors of the base model, e.g. {missing[:3]}")
            writer.finish()
            copy_base_files(base, staging, dtype)
            (staging / "README.md").write_text(card)
    else:
        for _ in stream:
            count += 1
    if dist.is_initialized():
        dist.barrier()
    seconds = time.perf_counter() - started
    return ExportResult(out, count, folder_bytes(out) if writer_rank else 0, seconds, 0.0)


def _check_exported(name: str, shape: tuple[int, ...], expected: dict[str, tuple[int, ...]]) -> None:
    if name not in expected:
        raise RuntimeError(f"the bridge exported {name}, which the base model does not have")
    if shape != expected[name]:
        raise RuntimeError(
            f"the bridge exported {name} with shape {list(shape)}; the base model has {list(expected[name])}"
        )


def export_policy(chunks: list[Any], bridge: Any, checkpoint: Path, dtype: str | None = None) -> Path:
    """The trainer's export next to `checkpoint` (collective): the weights the policy holds, the card of its run.

    Written to `<run>/hf/<step_N>` (replacing an earlier export of the same step, e.g. after a resume).
    """
    from nemo_spatial.export.files import base_dtype

    source = resolve_source(checkpoint)
    out = default_output(source)
    chosen = dtype or base_dtype(source.base)
    card = model_card(source, chosen, ["trainer.export_hf_every", str(checkpoint)])
    write_export(chunks, bridge, source.base, out, chosen, card, overwrite=True, show_progress=False)
    return out
