"""Process groups and Megatron-Core parallel state from one `ParallelConfig`, for NCCL (GPU) and gloo (CPU).

    state = initialize(cfg.parallel, seed=cfg.run.seed)   # every rank, after torchrun / spawn set the env
    ... build the model, train ...
    destroy()

The launcher (torchrun, SLURM's srun, or `nemo_spatial.parallel.launch.spawn`) provides RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. The layout is validated against the world before any group is created
(`layout.resolve_layout`). On a machine without CUDA the gloo backend is used, and the entry
point must have switched on the CPU mode (`cpu_compat.activate(cfg.parallel)`) before: `initialize` refuses
otherwise, so the rest of the code is the same on both.
`initialize` may be called again after `destroy_model_parallel()` with another layout over the same world
(the invariance tests switch layouts inside one group of processes).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from nemo_spatial.net import free_port
from nemo_spatial.parallel import cpu_compat
from nemo_spatial.parallel.config import ParallelConfig
from nemo_spatial.parallel.layout import Layout, check_runtime, resolve_layout


@dataclass(frozen=True)
class ParallelState:
    """This rank's place in the layout."""

    layout: Layout
    backend: str
    rank: int
    tensor_rank: int
    pipeline_rank: int
    data_rank: int

    @property
    def is_pipeline_first(self) -> bool:
        return self.pipeline_rank == 0

    @property
    def is_pipeline_last(self) -> bool:
        return self.pipeline_rank == self.layout.pipeline - 1

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


def transformer_engine_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None and torch.cuda.is_available()


def initialize(cfg: ParallelConfig, seed: int = 1) -> ParallelState:
    """Create (or reuse) the default process group and Megatron's TP/PP/CP/DP groups; seed the RNG streams."""
    cuda = torch.cuda.is_available()
    backend = check_runtime(cfg, cuda_available=cuda, transformer_engine_available=transformer_engine_available())
    world_size = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    layout = resolve_layout(cfg, world_size)
    if not cuda:
        cpu_compat.require_cpu_mode()  # switched on by the entry point, never here (see cpu_compat)
    else:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        _init_default_group(backend, world_size, timedelta(minutes=cfg.timeout_minutes))

    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        context_parallel_size=layout.context,
        distributed_timeout_minutes=cfg.timeout_minutes,
    )
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return ParallelState(
        layout=layout,
        backend=backend,
        rank=dist.get_rank(),
        tensor_rank=parallel_state.get_tensor_model_parallel_rank(),
        pipeline_rank=parallel_state.get_pipeline_model_parallel_rank(),
        data_rank=parallel_state.get_data_parallel_rank(),
    )


def _init_default_group(backend: str, world_size: int, timeout: timedelta) -> None:
    missing = [key for key in ("RANK", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ] if world_size > 1 else []
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; launch with torchrun, srun or "
            "nemo_spatial.parallel.launch.spawn, which set RANK, MASTER_ADDR and MASTER_PORT"
        )
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group(
        backend=backend, rank=int(os.environ.get("RANK", "0")), world_size=world_size, timeout=timeout
    )


def destroy() -> None:
    """Tear down Megatron's groups and the default group (safe to call twice)."""
    if "megatron.core" in sys.modules:
        from megatron.core import parallel_state

        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
