"""The reference policy for the KL term: a CPU copy of the initial weights, swapped into the model when needed.

A second Megatron model would double the GPU memory of the weights (and need its own sharding); instead each
rank keeps its own shards of the initial weights in (pinned, on GPU machines) host memory, and
`reference_log_probs` copies them into the model, runs the forward pass, and copies the current weights back
(as NeMo RL does). Cost per call: two host<->device copies of the rank's shard, no extra GPU memory beyond one
staging copy of the current weights, which also lives on the host. The optimizer's fp32 main weights and
Adam states are not touched; the model's weights are restored bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    pinned = tensor.is_cuda
    copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pinned)
    copy.copy_(tensor.detach())
    return copy


class HostReference:
    """Host-memory copy of this rank's model weights at construction time."""

    def __init__(self, chunks: list[Any]) -> None:
        self._weights = [_host_copy(p) for p in _parameters(chunks)]

    @contextmanager
    def swapped_in(self, chunks: list[Any]) -> Iterator[None]:
        """Inside the block the model holds the reference weights; afterwards its own again, exactly."""
        params = _parameters(chunks)
        current = [_host_copy(p) for p in params]
        try:
            with torch.no_grad():
                for param, reference in zip(params, self._weights, strict=True):
                    param.copy_(reference, non_blocking=True)
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(params, current, strict=True):
                    param.copy_(saved, non_blocking=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()


def _parameters(chunks: list[Any]) -> list[torch.nn.Parameter]:
    return [p for chunk in chunks for p in chunk.parameters()]
