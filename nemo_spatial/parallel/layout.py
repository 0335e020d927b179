"""The parallel layout resolved against the world, the model and the sequence length; fails early and says the fix.

Megatron-Core would fail on most of these much later (an assert inside a layer, or a hang in a collective); these
checks run at start-up on every rank, before any process group exists, with the values and the fix in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nemo_spatial.errors import ConfigError
from nemo_spatial.parallel.config import ParallelConfig


@dataclass(frozen=True)
class Layout:
    """The sizes of every parallel dimension of a world (DP derived)."""

    world_size: int
    tensor: int
    pipeline: int
    context: int
    data: int
    sequence_parallel: bool

    @property
    def sequence_multiple(self) -> int:
        """Every padded sequence length must be a multiple of this (SP splits by TP; CP splits into 2*CP chunks)."""
        multiple = self.tensor if self.sequence_parallel else 1
        if self.context > 1:
            multiple = math.lcm(multiple, 2 * self.context)
        return multiple

    def describe(self) -> str:
        sp = "+SP" if self.sequence_parallel else ""
        return f"TP={self.tensor}{sp} PP={self.pipeline} CP={self.context} DP={self.data} (world {self.world_size})"


def resolve_layout(cfg: ParallelConfig, world_size: int) -> Layout:
    """The layout of `world_size` ranks under `cfg`; DP = world / (TP*PP*CP)."""
    if world_size < 1:
        raise ConfigError(f"world size {world_size} must be >= 1")
    model_parallel = cfg.model_parallel_size
    if world_size % model_parallel != 0:
        raise ConfigError(
            f"world size {world_size} is not divisible by TP*PP*CP = {cfg.tensor_model_parallel_size}*"
            f"{cfg.pipeline_model_parallel_size}*{cfg.context_parallel_size} = {model_parallel}; launch a multiple "
            f"of {model_parallel} processes, or change parallel.tensor_model_parallel_size / "
            "parallel.pipeline_model_parallel_size / parallel.context_parallel_size so that their product divides "
            f"{world_size}"
        )
    return Layout(
        world_size=world_size,
        tensor=cfg.tensor_model_parallel_size,
        pipeline=cfg.pipeline_model_parallel_size,
        context=cfg.context_parallel_size,
        data=world_size // model_parallel,
        sequence_parallel=cfg.sequence_parallel,
    )


def check_model_fits(layout: Layout, *, num_layers: int, num_attention_heads: int, num_query_groups: int) -> None:
    """The language model's layers split evenly over PP stages and its heads / KV groups over TP ranks."""
    if num_layers % layout.pipeline != 0:
        raise ConfigError(
            f"the model has {num_layers} layers, not divisible by parallel.pipeline_model_parallel_size="
            f"{layout.pipeline}; use a PP size that divides {num_layers}"
        )
    if num_attention_heads % layout.tensor != 0 or num_query_groups % layout.tensor != 0:
        raise ConfigError(
            f"the model has {num_attention_heads} attention heads and {num_query_groups} key/value heads; "
            f"parallel.tensor_model_parallel_size={layout.tensor} must divide both; use a TP size that divides "
            f"{math.gcd(num_attention_heads, num_query_groups)}"
        )


def check_sequence_length(layout: Layout, seq_length: int, *, name: str = "sequence length") -> None:
    """`seq_length` splits as SP and CP require (a multiple of `layout.sequence_multiple`)."""
    multiple = layout.sequence_multiple
    if seq_length % multiple != 0:
        rounded = math.ceil(seq_length / multiple) * multiple
        raise ConfigError(
            f"{name} {seq_length} is not a multiple of {multiple}, which {layout.describe()} requires "
            f"(sequence parallel splits the sequence over the {layout.tensor} TP ranks; context parallel into "
            f"2*CP chunks); use {rounded}, or pad sequences to a multiple of {multiple}"
        )


def check_runtime(cfg: ParallelConfig, *, cuda_available: bool, transformer_engine_available: bool) -> str:
    """The collective backend to use ('nccl' or 'gloo'), or a ConfigError for a layout this machine cannot run."""
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if cuda_available else "gloo"
    if backend == "nccl" and not cuda_available:
        raise ConfigError("parallel.backend=nccl needs CUDA GPUs and none is visible; use parallel.backend=gloo")
    if cfg.context_parallel_size > 1 and not transformer_engine_available:
        raise ConfigError(
            f"parallel.context_parallel_size={cfg.context_parallel_size} needs Transformer Engine's attention "
            "(GPU; Megatron's local attention has no context parallelism); set parallel.context_parallel_size=1"
        )
    return backend
