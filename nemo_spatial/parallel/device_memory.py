"""Handing the trainer's cached GPU memory back before a colocated vLLM wakes.

PyTorch's caching allocator keeps the blocks of the last step's activations and logits reserved after they are
freed; a colocated vLLM waking up (generation.placement=colocated) then finds that memory taken and its
`gpu_memory_utilization` share unavailable. Every trainer rank calls this right before the engines wake.
On CPU (or a process that never touched CUDA) it does nothing.
"""

from __future__ import annotations

import torch


def release_cached_device_memory() -> None:
    """Return this process's unused cached CUDA blocks to the driver (after the pending kernels finish)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
