"""Freeing the trainer's GPU memory during a colocated generation phase, and getting it back before training.

What moves (`policy.offload_during_generation`, generation.placement=colocated), per rank:
- the gradient buffers of Megatron DDP (fp32, one per model chunk and dtype): their storage is freed with
  `resize_(0)` and re-allocated zeroed on reload, nothing copied (between optimizer steps the gradients are
  zero: `train_step` zeroes them before its backward). Megatron-Core's own
  `_ParamAndGradBuffer.offload_to_cpu(move_params=False, move_grads=True)` / `reload_from_cpu(...)` do it, the
  per-buffer half of `DistributedDataParallel.offload_grad_buffers` (megatron-core 0.19.2), called per buffer
  so that a buffer whose grad storage doubles as the parameter storage (MXFP8's shared buffer) is left alone;
- the optimizer's tensors, to pinned host memory and back: every tensor of the torch optimizer's state (Adam's
  exp_avg and exp_avg_sq, a device step count) and the fp32 main parameters it updates where they have storage
  of their own (the distributed optimizer's `shard_fp32_from_float16_groups`). A main parameter that is a view
  of a model parameter (fp32 model weights: the optimizer updates the weights in place) stays: moving it would
  cut it from the weights. Tensors keep their identity (`t.data` is swapped), so the optimizer's dicts and
  Megatron's `param.main_param` handles still point at them. The pinned buffers are kept for the next offload
  (pinning tens of GB costs seconds every time); the host then holds one copy of this rank's optimizer state.
Why not Megatron's `MegatronOptimizer.offload_to_cpu` / `restore_from_cpu`: they move every CUDA tensor of the
param groups, fp32 views of the model weights included (the model would then train a detached copy), to fresh
pageable memory each time (`.cpu()`: slower, and re-allocated every step).
The weights stay on the device: the refit reads them while the optimizer is away.

On CPU (Megatron over gloo) device and host are one memory, so no optimizer tensor moves (`copy_state=False`);
the grad buffers are freed and restored all the same, so the control flow and the bit-identical training after
a reload are tested in CI (tests/distributed). `copy_state=True` forces the copies there too (a test's choice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from nemo_spatial.models.qwen25_vl.optimizer import sub_optimizers
from nemo_spatial.parallel.device_memory import release_cached_device_memory, synchronize_device


@dataclass
class HostOffload:
    """Offload / reload of one policy's grad buffers and optimizer state (see the module docstring)."""

    chunks: list[Any]  # the DDP-wrapped model chunks
    optimizer: Any  # the Megatron optimizer (ChainedOptimizer or a single one)
    copy_state: bool  # move the optimizer's tensors to host buffers (on CUDA; a no-op saving on CPU)
    offloaded: bool = False
    _host: HostBuffers | None = None  # the host copies of the optimizer's tensors, kept between offloads

    def offload(self) -> dict[str, float]:
        """Free the grad buffers, move the optimizer's tensors to host memory; bytes and seconds."""
        if self.offloaded:
            return {}
        started = time.perf_counter()
        synchronize_device()  # the optimizer step's kernels write what is about to move
        grad_bytes = 0
        for buffer in self._grad_buffers():
            grad_bytes += buffer.grad_data.numel() * buffer.grad_data.element_size()
            buffer.offload_to_cpu(move_params=False, move_grads=True)
        state_bytes = 0
        if self.copy_state:
            tensors = self._state_tensors()
            if self._host is None or not self._host.fits(tensors):
                self._host = HostBuffers(tensors)  # the first offload, or the optimizer's tensors were replaced
            for tensor, host in zip(tensors, self._host.views, strict=True):
                host.copy_(tensor.data, non_blocking=host.is_pinned())
                tensor.data = host  # the device block goes back to the allocator, after the copy in stream order
                state_bytes += host.numel() * host.element_size()
        release_cached_device_memory()  # the host copies are complete; the freed blocks go back to the driver
        self.offloaded = True
        return {
            "timing/offload_s": time.perf_counter() - started,
            "offload/grad_bytes": float(grad_bytes),
            "offload/optimizer_bytes": float(state_bytes),
        }

    def reload(self, device: torch.device) -> dict[str, float]:
        """Re-allocate the grad buffers (zeroed) and copy the optimizer's tensors back to `device`; seconds."""
        if not self.offloaded:
            return {}
        started = time.perf_counter()
        for buffer in self._grad_buffers():
            buffer.reload_from_cpu(move_params=False, move_grads=True)
        if self.copy_state:
            assert self._host is not None
            for tensor, host in zip(self._host.tensors, self._host.views, strict=True):
                on_device = torch.empty(host.shape, dtype=host.dtype, device=device)
                on_device.copy_(host, non_blocking=host.is_pinned())
                tensor.data = on_device
        synchronize_device()
        self.offloaded = False
        return {"timing/reload_s": time.perf_counter() - started}

    def _grad_buffers(self) -> list[Any]:
        """DDP's param-and-grad buffers whose grad storage is its own (not the parameters')."""
        buffers = [b for chunk in self.chunks for b in (*chunk.buffers, *chunk.expert_parallel_buffers)]
        return [b for b in buffers if b.grad_data is not None and not _same_storage(b.grad_data, b.param_data)]

    def _state_tensors(self) -> list[torch.Tensor]:
        """The optimizer's state tensors and its main parameters that do not alias a model parameter."""
        weights = {p.untyped_storage().data_ptr() for chunk in self.chunks for p in chunk.parameters()}
        out: dict[int, torch.Tensor] = {}  # by identity: a tensor is moved once
        for sub in sub_optimizers(self.optimizer):
            inner = getattr(sub, "optimizer", None)
            if inner is None:  # a stub optimizer (a rank without parameters of this kind)
                continue
            for group in inner.param_groups:
                for param in group["params"]:
                    if param.untyped_storage().data_ptr() not in weights:
                        param.grad = None  # a view of the grad buffer; the next step sets it again
                        out[id(param)] = param
            for state in inner.state.values():
                out.update({id(v): v for k, v in state.items() if isinstance(v, torch.Tensor) and k != "step"})
        return list(out.values())


class HostBuffers:
    """One flat host buffer per dtype holding copies of `tensors` (views in their order), pinned on CUDA.

    Pinned by registering plain host memory with CUDA (cudaHostRegister): exactly the bytes needed, where
    `pin_memory=True` rounds every allocation up to a power of two (up to twice this rank's optimizer state).
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.signature = _signature(tensors)
        sizes: dict[torch.dtype, int] = {}
        for tensor in tensors:
            sizes[tensor.dtype] = sizes.get(tensor.dtype, 0) + tensor.numel()
        self.flat = {dtype: _pinned_empty(numel, dtype) for dtype, numel in sizes.items()}
        offsets = dict.fromkeys(sizes, 0)
        self.views: list[torch.Tensor] = []
        for tensor in tensors:
            start = offsets[tensor.dtype]
            self.views.append(self.flat[tensor.dtype][start : start + tensor.numel()].view(tensor.shape))
            offsets[tensor.dtype] = start + tensor.numel()

    def fits(self, tensors: list[torch.Tensor]) -> bool:
        return _signature(tensors) == self.signature

    def __del__(self) -> None:
        for flat in getattr(self, "flat", {}).values():
            if _registered(flat):
                torch.cuda.cudart().cudaHostUnregister(flat.data_ptr())


def _signature(tensors: list[torch.Tensor]) -> list[tuple[int, tuple[int, ...], torch.dtype]]:
    return [(id(t), tuple(t.shape), t.dtype) for t in tensors]


def _pinned_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A host tensor, page-locked when CUDA is in use (else plain: CPU training has nothing to pin for)."""
    flat = torch.empty(numel, dtype=dtype, device="cpu")
    if numel and torch.cuda.is_available() and torch.cuda.is_initialized():
        nbytes = numel * flat.element_size()
        if int(torch.cuda.cudart().cudaHostRegister(flat.data_ptr(), nbytes, 0)) != 0:
            return torch.empty(numel, dtype=dtype, device="cpu", pin_memory=True)  # rounded up, but pinned
        _REGISTERED.add(flat.data_ptr())
    return flat


_REGISTERED: set[int] = set()  # host memory this module registered with CUDA (unregistered before it is freed)


def _registered(flat: torch.Tensor) -> bool:
    if flat.data_ptr() not in _REGISTERED:
        return False
    _REGISTERED.discard(flat.data_ptr())
    return True


def _same_storage(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
