"""Handing the trainer's cached GPU memory back before a colocated vLLM wakes.

PyTorch's caching allocator keeps the blocks of the last step's activations and logits reserved after they are
freed; a colocated vLLM waking up (generation.placement=colocated) then finds that memory taken and its
`gpu_memory_utilization` share unavailable. Every trainer rank calls this right before the engines wake (the
policy's offload, models/qwen25_vl/offload.py, calls it too, after it freed its buffers).
On CPU (or a process that never touched CUDA) both functions do nothing.
"""

from __future__ import annotations

import torch


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def synchronize_device() -> None:
    """Wait for this process's pending CUDA kernels (nothing to wait for on CPU)."""
    if _cuda_in_use():
        torch.cuda.synchronize()


def release_cached_device_memory() -> None:
    """Return this process's unused cached CUDA blocks to the driver (after the pending kernels finish)."""
    if not _cuda_in_use():
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
