"""CPU stand-ins for Megatron-Core's hard-coded CUDA calls, so the same Megatron code runs over gloo on CPU.

Megatron-Core has no CPU mode: it allocates with `device="cuda"` / `torch.cuda.current_device()`, checks
`param.type() == "torch.cuda.FloatTensor"`, keeps its tensor-parallel RNG streams with `torch.cuda.get_rng_state`,
and uses CUDA streams, events, NVTX ranges and memory statistics. No config flag avoids these (measured on
megatron-core 0.19.2, ../shared/docs/stack-notes.md). `activate()` installs, once per process and only when
`torch.cuda.is_available()` is False:

1. A global `TorchFunctionMode` (`_CudaToCpuMode`) that rewrites CUDA devices to CPU in every torch call that
   takes a device (factory functions, `Tensor.to/new_*`, `.cuda()`), drops `pin_memory=True` (pinning needs a
   CUDA driver), and makes `Tensor.type()` report `torch.cuda.*Tensor` (the distributed optimizer and
   gradient clipping assert that name). The mode is pushed on the torch-function mode stack, which is
   thread-local and empty in the autograd backward, so `_patch_backward()` re-enters it around every custom
   autograd Function's `backward` (Megatron's Functions allocate with `device="cuda"` there), and
   `activate()` pushes it again on any other thread that calls it.
2. `torch.cuda` functions replaced by CPU equivalents: the "CUDA" RNG is the CPU default generator
   (`get/set_rng_state`, `manual_seed`, `default_generators`; `manual_seed_all` is a no-op because
   `torch.manual_seed` itself calls it), `current_device() == 0`, `set_device`/`synchronize`/`empty_cache` are
   no-ops, streams and events are inert objects (everything on CPU is already ordered), NVTX ranges do nothing,
   and memory statistics read 0.
3. `torch.cuda._lazy_call` (and Megatron's imported copy of it) runs the callback at once: torch defers it
   until CUDA initialises, which never happens here, so Megatron's RNG-tracker `fork()` would silently not
   switch streams and the queue would grow by a formatted stack trace per call.

What it does not do: make anything faster (the mode adds a Python call to every torch call), or emulate
kernels that only exist on a GPU (Transformer Engine, FP8, fused Apex kernels; Megatron falls back to its local
implementations). Nothing else in the package knows about this module: `nemo_spatial.parallel.state.initialize`
calls `activate()` before it touches Megatron.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_state_lock = threading.Lock()
_active = False
_mode: _CudaToCpuMode | None = None
_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
    "torch.ByteTensor": "torch.cuda.ByteTensor",
    "torch.BoolTensor": "torch.cuda.BoolTensor",
}


def is_active() -> bool:
    """Whether the stand-ins are installed in this process."""
    return _active


def activate() -> bool:
    """Install the stand-ins when no GPU is present; returns whether they are active. Idempotent."""
    global _active, _mode
    if torch.cuda.is_available():
        return False
    with _state_lock:
        if not _active:
            _patch_torch_cuda()
            _patch_backward()
            _mode = _CudaToCpuMode()
            _active = True
    _ensure_mode()
    return True


def _map_device(device: Any) -> Any:
    """'cuda', 'cuda:1', torch.device('cuda'), or a bare int (a CUDA index to torch) -> 'cpu'."""
    if isinstance(device, bool):
        return device
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA placement to CPU in every torch call made while the mode is on the stack."""

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if func is torch.Tensor.cuda or func is torch.Tensor.pin_memory:
            return args[0]
        if "device" in kwargs:
            kwargs["device"] = _map_device(kwargs["device"])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.to and len(args) > 1:
            args = (args[0], _map_device(args[1]), *args[2:])
        return func(*args, **kwargs)


def _ensure_mode() -> None:
    """Push the mode on this thread's torch-function mode stack unless it is already there."""
    if _mode is None:
        return
    stack = torch.overrides._get_current_function_mode_stack()
    if not any(mode is _mode for mode in stack):
        _mode.__enter__()


@contextlib.contextmanager
def _mode_active() -> Iterator[None]:
    """The mode for the duration of a call, whatever thread it runs on."""
    if _mode is None:
        yield
        return
    stack = torch.overrides._get_current_function_mode_stack()
    if any(mode is _mode for mode in stack):
        yield
        return
    with _mode:
        yield


def _patch_backward() -> None:
    """Run custom autograd Functions' `backward` with the mode on the stack.

    The autograd engine runs backward with an empty torch-function mode stack, and Megatron's Functions
    (tensor-parallel collectives, the vocab-parallel cross entropy) allocate with `device="cuda"` there.
    `BackwardCFunction.apply` is the one Python entry point of every custom Function's backward.
    """
    backward_node = torch.autograd.function.BackwardCFunction
    original_apply = backward_node.apply

    def apply(self: Any, *args: Any) -> Any:
        with _mode_active():
            return original_apply(self, *args)

    backward_node.apply = apply  # type: ignore[method-assign]


class _InertStream:
    """A CUDA stream / event stand-in: CPU work is already ordered, so waiting and recording do nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.device = torch.device("cpu")

    def wait_stream(self, *args: Any) -> None: ...

    def wait_event(self, *args: Any) -> None: ...

    def record_event(self, event: Any = None) -> _InertStream:
        return event if event is not None else _InertStream()

    def record(self, *args: Any) -> None: ...

    def wait(self, *args: Any) -> None: ...

    def synchronize(self) -> None: ...

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0

    def __enter__(self) -> _InertStream:
        return self

    def __exit__(self, *exc: object) -> None: ...


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _get_rng_state(device: Any = "cuda") -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    # torch.manual_seed would call torch.cuda.manual_seed_all -> recursion; seed the generator directly.
    torch.default_generator.manual_seed(int(seed))


def _lazy_call(callable_: Callable[[], Any], **kwargs: Any) -> None:
    callable_()


def _distinct(value: Any) -> Any:
    """A separate function object per patched name: torch._dynamo's trace rules map each torch function object
    to one rule and reject the same object appearing under two names with different rules."""
    if not callable(value) or isinstance(value, type):
        return value

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return value(*args, **kwargs)

    return stand_in


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    replacements: dict[str, Any] = {
        "current_device": _zero,
        "set_device": _noop,
        "synchronize": _noop,
        "empty_cache": _noop,
        "ipc_collect": _noop,
        "Stream": _InertStream,
        "ExternalStream": _InertStream,
        "Event": _InertStream,
        "current_stream": lambda *a, **k: _InertStream(),
        "default_stream": lambda *a, **k: _InertStream(),
        "stream": lambda *a, **k: contextlib.nullcontext(),
        "set_stream": _noop,
        "get_rng_state": _get_rng_state,
        "set_rng_state": _set_rng_state,
        "manual_seed": _manual_seed,
        "manual_seed_all": _noop,
        "default_generators": (torch.default_generator,),
        "memory_allocated": _zero,
        "max_memory_allocated": _zero,
        "memory_reserved": _zero,
        "max_memory_reserved": _zero,
        "reset_peak_memory_stats": _noop,
        "reset_max_memory_allocated": _noop,
        "memory_stats": lambda *a, **k: {},
        "_lazy_call": _lazy_call,
        "_lazy_init": _noop,
    }
    for name, value in replacements.items():
        setattr(cuda, name, _distinct(value))
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all"):
        setattr(cuda.random, name, getattr(cuda, name))
    for name in ("range_push", "range_pop", "mark"):
        setattr(cuda.nvtx, name, _distinct(_noop))
    cuda.nvtx.range = _distinct(lambda *a, **k: contextlib.nullcontext())  # type: ignore[assignment]
    # Megatron's RNG module imported torch's `_lazy_call`/`_lazy_init` by name at its own import.
    megatron_random = importlib.import_module("megatron.core.tensor_parallel.random")
    megatron_random._lazy_call = _lazy_call  # type: ignore[attr-defined]
    megatron_random._lazy_init = _noop  # type: ignore[attr-defined]
