"""The trainer <-> vLLM-worker broadcast group used by the NCCL weight transport.

What it computes: a process group outside torch.distributed's global state (so it neither needs nor
disturbs the trainer's Megatron groups or vLLM's own), rank 0 = the trainer's sender, ranks
`rank_offset..` = the vLLM workers, and one operation on it: broadcast a flat byte buffer from rank 0.

- backend "nccl": vLLM's pattern, `StatelessProcessGroup` (a TCPStore rendezvous) + `PyNcclCommunicator`
  on the current CUDA device. This is the production transport across hosts.
- backend "gloo": the same rendezvous and broadcast over vLLM's stateless torch gloo group, on CPU. It
  exists so the whole protocol (rendezvous, per-bucket metadata over HTTP concurrent with the data
  broadcast, unpacking, loading) runs in CPU tests and on hosts without GPUs; it is not meant to be fast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

BACKENDS = ("nccl", "gloo")


@dataclass
class GroupSpec:
    """Where and how the trainer and the vLLM workers meet."""

    backend: str
    master_address: str
    master_port: int
    world_size: int
    rank_offset: int = 1
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"broadcast backend {self.backend!r} is not one of {BACKENDS}")
        if not self.master_address:
            raise ValueError("broadcast group needs master_address: the trainer host's address the workers reach")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"broadcast group master_port={self.master_port} must be in 1..65535")
        if self.world_size < 2:
            raise ValueError(f"broadcast group world_size={self.world_size} must count the trainer and >= 1 worker")
        if not 1 <= self.rank_offset < self.world_size:
            raise ValueError(f"rank_offset={self.rank_offset} must be in 1..world_size-1 (rank 0 is the trainer)")


class BroadcastGroup:
    """One member of the group; `broadcast(buffer)` sends (rank 0) or receives (others) in place."""

    def __init__(self, spec: GroupSpec, rank: int) -> None:
        self.spec = spec
        self.rank = rank
        self._pg: Any = None
        self._nccl: Any = None
        if spec.backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

            device = torch.cuda.current_device()
            self._nccl = stateless_init_process_group(
                spec.master_address, spec.master_port, rank, spec.world_size, device
            )
            self.device = torch.device("cuda", device)
        else:
            from vllm.distributed.utils import stateless_init_torch_distributed_process_group

            self._pg = stateless_init_torch_distributed_process_group(
                spec.master_address,
                spec.master_port,
                rank,
                spec.world_size,
                backend="gloo",
                timeout=timedelta(seconds=spec.timeout_s),
            )
            self.device = torch.device("cpu")

    def broadcast(self, buffer: torch.Tensor) -> None:
        """Rank 0's `buffer` into every member's `buffer` (same size and dtype everywhere)."""
        if self._nccl is not None:
            self._nccl.broadcast(buffer, src=0, stream=torch.cuda.current_stream())
            torch.cuda.current_stream().synchronize()
        else:
            self._pg.broadcast(buffer, 0).wait()

    def close(self) -> None:
        if self._nccl is not None:
            self._nccl = None
        if self._pg is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self._pg.shutdown()
            self._pg = None
