"""Runs in a fresh process (the compatibility layer patches torch process-wide): what Megatron needs from CUDA."""

from __future__ import annotations

import os
from typing import Any

import torch


class _AllocatesInBackward(torch.autograd.Function):
    """Like Megatron's tensor-parallel Functions: allocates on "cuda" in backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2 + torch.zeros(grad.shape, device=torch.cuda.current_device())


def probe(rank: int) -> dict[str, Any]:
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig

    out: dict[str, Any] = {"active_before": cpu_compat.is_active()}
    out["nccl_activates"] = cpu_compat.activate(ParallelConfig(backend="nccl"))  # no GPU here: not the CPU mode
    out["active_after_nccl"] = cpu_compat.is_active()
    out["activated"] = cpu_compat.activate(ParallelConfig())
    out["activate_again"] = cpu_compat.activate(ParallelConfig(backend="gloo"))
    x = torch.ones(3)
    out["devices"] = [
        str(torch.empty(2, device="cuda").device),
        str(torch.zeros(2, device=torch.cuda.current_device()).device),
        str(x.to("cuda:0").device),
        str(x.cuda().device),
        str(torch.empty(2, pin_memory=True).device),
    ]
    out["types"] = [x.type(), x.bfloat16().type(), x.long().type()]
    leaf = torch.ones(3, requires_grad=True)
    _AllocatesInBackward.apply(leaf).sum().backward()
    out["grad"] = leaf.grad.tolist()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        event = torch.cuda.Event()
        event.record()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("x")
    torch.cuda.nvtx.range_pop()
    out["memory"] = torch.cuda.max_memory_allocated()
    out.update(_megatron_rng())
    import torch._dynamo.trace_rules as trace_rules

    out["dynamo_rules"] = len(trace_rules.get_torch_obj_rule_map()) > 0
    return out


def _megatron_rng() -> dict[str, Any]:
    """The tensor-parallel RNG tracker forks a separate, reproducible stream and restores the default one."""
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    parallel_state.initialize_model_parallel()
    queued = len(torch.cuda._queued_calls)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    tracker = tensor_parallel.get_cuda_rng_tracker()
    reference_default = torch.get_rng_state()
    outside = torch.rand(4)
    torch.set_rng_state(reference_default)
    with tracker.fork():
        forked = torch.rand(4)
    after_fork = torch.rand(4)
    with tracker.fork():
        forked_again = torch.rand(4)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    with tensor_parallel.get_cuda_rng_tracker().fork():
        forked_reseeded = torch.rand(4)
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()
    return {
        "fork_differs": not torch.equal(forked, outside),
        "default_restored": torch.equal(after_fork, outside),
        "fork_advances": not torch.equal(forked, forked_again),
        "fork_reproducible": torch.equal(forked, forked_reseeded),
        "queued_calls_growth": len(torch.cuda._queued_calls) - queued,
    }


def probe_scoped(rank: int) -> dict[str, Any]:
    """Without the CPU mode the policy's entry points refuse; `scoped` switches it on and restores torch on exit."""
    import sys

    from nemo_spatial.models.qwen25_vl.bridge import import_megatron_bridge
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig
    from nemo_spatial.parallel.state import initialize

    out: dict[str, Any] = {"refusals": [_refusal(lambda: initialize(ParallelConfig()))]}
    out["refusals"].append(_refusal(import_megatron_bridge))
    before = {name: getattr(torch.cuda, name) for name in ("current_device", "get_rng_state", "_lazy_call", "Stream")}
    apply_before = torch.autograd.function.BackwardCFunction.apply
    with cpu_compat.scoped(ParallelConfig()) as on:
        out["on"] = on and cpu_compat.is_active() and cpu_compat.transformer_engine_stand_in_installed()
        out["inside_device"] = str(torch.empty(2, device="cuda").device)
        leaf = torch.ones(3, requires_grad=True)
        _AllocatesInBackward.apply(leaf).sum().backward()
        assert leaf.grad is not None
        out["inside_grad"] = leaf.grad.tolist()
        import_megatron_bridge()
        out["bridge_imported"] = "megatron.bridge.peft.lora_layers" in sys.modules
    out["off_after"] = not cpu_compat.is_active() and not cpu_compat.transformer_engine_stand_in_installed()
    out["torch_restored"] = all(getattr(torch.cuda, name) is value for name, value in before.items())
    out["backward_restored"] = torch.autograd.function.BackwardCFunction.apply is apply_before
    out["hooks_restored"] = not any(type(finder).__name__ == "_LoraLayersFinder" for finder in sys.meta_path)
    out["mode_stack_after"] = len(torch.overrides._get_current_function_mode_stack())
    out["after_cuda_alloc"] = _refusal(lambda: torch.empty(2, device="cuda"))
    return out


def _refusal(call: Any) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 -- the probe reports whatever the call raised
        return f"{type(error).__name__}: {error}"
    return ""
