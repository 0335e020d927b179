"""The CPU mode: what makes the same Megatron-Core and Megatron-Bridge code run over gloo without a GPU. One switch.

    from nemo_spatial.parallel import cpu_compat
    cpu_compat.activate(cfg.parallel)        # an entry point, first thing, before any component is built
    with cpu_compat.scoped(parallel_cfg):    # a test: the same, undone on exit
        ...

Every entry point that may build the policy calls `activate(cfg.parallel)` once, before it builds anything
(`nemo_spatial.train.run`; an SFT entry point and `tools/megatron_to_hf.py` do the same). It decides from
`parallel.backend` and the machine, never from who happens to import what:
- the torch patches (1-3 below) go on when the backend is gloo (`parallel.backend=gloo`, or `auto` with
  `torch.cuda.is_available()` False) and there is no CUDA: Megatron then runs on CPU;
- the Transformer Engine stand-in (4) goes on when TE is not installed (CPU machines, and GPU machines without
  TE), whatever the backend.
Nothing is switched on as a side effect: `nemo_spatial.parallel.state.initialize` (hence building the policy)
and `models.qwen25_vl.bridge.import_megatron_bridge` refuse to run without it, with a message naming this
function. `scoped()` undoes everything it switched on (modules imported meanwhile stay imported).

Why: Megatron-Core has no CPU mode. It allocates with `device="cuda"` / `torch.cuda.current_device()`, checks
`param.type() == "torch.cuda.FloatTensor"`, keeps its tensor-parallel RNG streams with `torch.cuda.get_rng_state`,
and uses CUDA streams, events, NVTX ranges and memory statistics. No config flag avoids these (measured on
megatron-core 0.19.2, ../shared/docs/stack-notes.md). What is patched, and why each patch is needed:

1. A global `TorchFunctionMode` (`_CudaToCpuMode`) that rewrites CUDA devices to CPU in every torch call that
   takes a device (factory functions, `Tensor.to/new_*`, `.cuda()`): Megatron places its parameters, buffers
   and communication scratch on "cuda". It drops `pin_memory=True` (pinning needs a CUDA driver) and makes
   `Tensor.type()` report `torch.cuda.*Tensor` (the distributed optimizer and gradient clipping assert that
   name). The mode is pushed on the torch-function mode stack, which is thread-local and empty in the autograd
   backward, so `BackwardCFunction.apply` is wrapped to re-enter it around every custom autograd Function's
   `backward` (Megatron's tensor-parallel Functions allocate with `device="cuda"` there); `activate()` pushes
   it again on any other thread that calls it (state.initialize does, on the thread that builds the policy).
2. `torch.cuda` functions replaced by CPU equivalents: Megatron seeds, saves and restores the "CUDA" RNG for
   its tensor-parallel streams, so that RNG is the CPU default generator (`get/set_rng_state`, `manual_seed`,
   `default_generators`; `manual_seed_all` is a no-op because `torch.manual_seed` itself calls it);
   `current_device() == 0` (used as a device everywhere), `set_device`/`synchronize`/`empty_cache` are no-ops,
   streams and events are inert objects (everything on CPU is already ordered), NVTX ranges do nothing, and
   memory statistics read 0 (Megatron logs them).
3. `torch.cuda._lazy_call` (and Megatron's imported copy of it) runs the callback at once: torch defers it
   until CUDA initialises, which never happens here, so Megatron's RNG-tracker `fork()` would silently not
   switch streams and the queue would grow by a formatted stack trace per call.
4. An import hook for one module: `megatron.bridge.peft.lora_layers` imports Transformer Engine at module level
   and `import megatron.bridge` imports it. While that one module executes, it sees an inert stand-in
   `transformer_engine` (any attribute is a placeholder class, enough for its annotations and base classes);
   every other module still sees TE as absent, so Megatron and the bridge pick their local (torch) code paths.
   LoRA is then unusable, and nothing here uses it.

What it does not do: make anything faster (the mode adds a Python call to every torch call), or emulate
kernels that only exist on a GPU (Transformer Engine, FP8, fused Apex kernels; Megatron falls back to its local
implementations). The scoped form is for single-threaded tests: a thread that pushed the mode itself keeps it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from nemo_spatial.parallel.config import ParallelConfig

_LORA_MODULE = "megatron.bridge.peft.lora_layers"
_MISSING = object()
_state_lock = threading.Lock()
_active = False  # the torch patches (1-3)
_mode: _CudaToCpuMode | None = None
_finder: _LoraLayersFinder | None = None  # the TE stand-in hook (4)
_originals: list[tuple[Any, str, Any]] = []  # (owner, attribute, original or _MISSING), to undo 1-3
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
_HOW = (
    "call nemo_spatial.parallel.cpu_compat.activate(cfg.parallel) in the entry point before building any "
    "component (a test: `with cpu_compat.scoped(parallel_cfg):`)"
)


def needs_cpu_mode(parallel: ParallelConfig) -> bool:
    """Whether Megatron runs on CPU for this config on this machine: backend gloo (or auto) and no CUDA."""
    return parallel.backend in ("gloo", "auto") and not torch.cuda.is_available()


def needs_transformer_engine_stand_in() -> bool:
    return importlib.util.find_spec("transformer_engine") is None


def activate(parallel: ParallelConfig) -> bool:
    """Switch on what `parallel` needs on this machine (see the module docstring); returns whether Megatron runs on
    CPU. Process-wide and idempotent; a second call on another thread pushes the torch mode on that thread."""
    with _state_lock:
        if needs_transformer_engine_stand_in():
            _install_transformer_engine_stand_in()
        if not needs_cpu_mode(parallel):
            return False
        if not _active:
            _activate_torch_patches()
    ensure_on_this_thread()
    return True


def deactivate() -> None:
    """Undo what `activate` switched on: torch's attributes restored, the mode popped on this thread, the hook
    removed. Modules imported meanwhile stay imported (megatron.bridge keeps its stand-in LoRA classes)."""
    with _state_lock:
        _deactivate_torch_patches()
        _remove_transformer_engine_stand_in()


@contextlib.contextmanager
def scoped(parallel: ParallelConfig) -> Iterator[bool]:
    """`activate(parallel)` for the block; on exit it undoes what it switched on itself (tests)."""
    had_patches, had_stand_in = _active, _finder is not None
    try:
        yield activate(parallel)
    finally:
        with _state_lock:
            if not had_patches:
                _deactivate_torch_patches()
            if not had_stand_in:
                _remove_transformer_engine_stand_in()


def is_active() -> bool:
    """Whether the torch patches (Megatron on CPU) are on in this process."""
    return _active


def transformer_engine_stand_in_installed() -> bool:
    return _finder is not None


def require_cpu_mode() -> None:
    """For code about to run Megatron without CUDA: fail with the fix unless the CPU mode is on; push the mode on
    this thread (the torch-function mode stack is per thread)."""
    if not _active:
        raise RuntimeError(f"Megatron on CPU needs the CPU mode, and it is off in this process: {_HOW}")
    ensure_on_this_thread()


def require_transformer_engine_stand_in() -> None:
    """For code about to `import megatron.bridge`: fail with the fix when TE is missing and the hook is not on."""
    if needs_transformer_engine_stand_in() and _finder is None and "megatron.bridge" not in sys.modules:
        raise RuntimeError(
            "megatron.bridge imports Transformer Engine, which is not installed, and the stand-in for it is off: "
            + _HOW
        )


def _activate_torch_patches() -> None:
    global _active, _mode
    _patch_torch_cuda()
    _patch_backward()
    _mode = _CudaToCpuMode()
    _active = True


def _deactivate_torch_patches() -> None:
    global _active, _mode
    if _mode is not None:
        stack = torch.overrides._get_current_function_mode_stack()
        if stack and stack[-1] is _mode:
            _mode.__exit__(None, None, None)
        elif any(mode is _mode for mode in stack):
            raise RuntimeError("cpu_compat: another torch function mode was entered after the CPU mode; exit it first")
    for owner, name, original in reversed(_originals):
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _originals.clear()
    _active, _mode = False, None


def _remove_transformer_engine_stand_in() -> None:
    global _finder
    if _finder is not None and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    _finder = None


def _set(owner: Any, name: str, value: Any) -> None:
    """setattr, remembering the original so that `deactivate` can restore it."""
    _originals.append((owner, name, owner.__dict__.get(name, _MISSING) if hasattr(owner, "__dict__") else _MISSING))
    setattr(owner, name, value)


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


def ensure_on_this_thread() -> None:
    """Push the mode on this thread's torch-function mode stack unless it is already there (no-op when off)."""
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

    _set(backward_node, "apply", apply)


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
        _set(cuda, name, _distinct(value))
    for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all"):
        _set(cuda.random, name, getattr(cuda, name))
    for name in ("range_push", "range_pop", "mark"):
        _set(cuda.nvtx, name, _distinct(_noop))
    _set(cuda.nvtx, "range", _distinct(lambda *a, **k: contextlib.nullcontext()))
    # Megatron's RNG module imported torch's `_lazy_call`/`_lazy_init` by name at its own import.
    megatron_random = importlib.import_module("megatron.core.tensor_parallel.random")
    _set(megatron_random, "_lazy_call", _lazy_call)
    _set(megatron_random, "_lazy_init", _noop)


def _install_transformer_engine_stand_in() -> None:
    global _finder
    if _finder is None:
        _finder = _LoraLayersFinder()
        sys.meta_path.insert(0, _finder)


class _Missing(type):
    def __getattr__(cls, name: str) -> Any:
        return cls


class _TransformerEngineStandIn(metaclass=_Missing):
    """Any attribute of the stand-in TE is this class (annotations and base classes at import time only)."""


class _LoraLayersFinder(importlib.abc.MetaPathFinder):
    """Finds `megatron.bridge.peft.lora_layers` and executes it with a stand-in `transformer_engine` in place."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _LORA_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _WithStandInLoader(spec.loader)
        return spec


class _WithStandInLoader(importlib.abc.Loader):
    def __init__(self, real: Any) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        package = types.ModuleType("transformer_engine")
        package.__path__ = []
        pytorch = types.ModuleType("transformer_engine.pytorch")
        pytorch.__path__ = []
        pytorch.__getattr__ = lambda name: _TransformerEngineStandIn  # type: ignore[method-assign]
        package.pytorch = pytorch  # type: ignore[attr-defined]
        sys.modules["transformer_engine"], sys.modules["transformer_engine.pytorch"] = package, pytorch
        try:
            self.real.exec_module(module)
        finally:
            del sys.modules["transformer_engine"], sys.modules["transformer_engine.pytorch"]
