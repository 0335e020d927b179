"""policy.offload_during_generation on a GPU: the device memory the policy's offload releases, and its seconds.

After one training step (Adam's state exists), `offload_to_host` frees the DDP grad buffers and moves the
optimizer's fp32 main parameters and moments to pinned host memory; `reload_to_device` brings them back. The
test measures what `torch.cuda.memory_allocated` and the driver's free memory gain, prints them with both phases'
seconds, and checks that the state came back unchanged and that the next step trains. On CPU the control flow
and the bit-identical step are tested in tests/distributed/test_policy_layouts.py; this one is skipped there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the offload moves device memory)"),
]


def _run(rank: int, model_dir: str, batch_tensors: dict) -> dict[str, Any]:
    from nemo_spatial.batch import PolicyBatch
    from nemo_spatial.models.qwen25_vl.config import OptimizerConfig, PolicyConfig
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig
    from tests.distributed.policy_scenarios import stand_in_loss

    cfg = PolicyConfig(hf_path=model_dir, precision="bf16", max_seq_length=256, optimizer=OptimizerConfig(lr=1e-4))
    parallel = ParallelConfig(tensor_model_parallel_size=int(os.environ["WORLD_SIZE"]))
    cpu_compat.activate(parallel)  # on a GPU: only the Transformer Engine stand-in, where TE is not installed
    policy = MegatronPolicy(cfg, parallel, seed=1)
    batch = PolicyBatch(**batch_tensors)
    policy.train_step(batch, stand_in_loss)
    snapshot = [t.detach().clone() for t in policy.offload._state_tensors()]
    torch.cuda.synchronize()
    allocated, free = torch.cuda.memory_allocated(), torch.cuda.mem_get_info()[0]
    offload = policy.offload_to_host()
    offloaded, free_offloaded = torch.cuda.memory_allocated(), torch.cuda.mem_get_info()[0]
    assert policy.offload._host is not None
    pinned = all(view.is_pinned() for view in policy.offload._host.views)
    reload = policy.reload_to_device()
    reloaded = torch.cuda.memory_allocated()
    restored = all(torch.equal(a, b) for a, b in zip(snapshot, policy.offload._state_tensors(), strict=True))
    metrics = policy.train_step(batch, stand_in_loss)
    return {
        "offload": offload, "reload": reload, "allocated": allocated, "offloaded": offloaded, "reloaded": reloaded,
        "driver_freed": free_offloaded - free, "pinned": pinned, "restored": restored, "metrics": metrics,
        "on_device": all(t.is_cuda for t in policy.offload._state_tensors()),
    }  # fmt: skip


def test_offload_releases_the_optimizer_state_and_grads_and_reload_restores_them(tiny_model_dir: Path) -> None:
    from nemo_spatial.parallel.launch import spawn
    from tests.distributed.policy_scenarios import build_batch

    nprocs = min(2, torch.cuda.device_count())
    run = spawn(_run, nprocs=nprocs, args=(str(tiny_model_dir), build_batch(tiny_model_dir)))[0]
    moved = run["offload"]["offload/grad_bytes"] + run["offload"]["offload/optimizer_bytes"]
    released = run["allocated"] - run["offloaded"]
    off, gib = run["offload"], 1024**3
    print(
        f"TP={nprocs}: offload {off['timing/offload_s']:.3f} s, reload {run['reload']['timing/reload_s']:.3f} s; "
        f"grads {off['offload/grad_bytes'] / gib:.3f} GiB, optimizer state {off['offload/optimizer_bytes'] / gib:.3f} "
        f"GiB; allocated {run['allocated'] / gib:.3f} -> {run['offloaded'] / gib:.3f} GiB "
        f"(driver free +{run['driver_freed'] / gib:.3f} GiB)"
    )
    assert run["offload"]["offload/optimizer_bytes"] > 0 and run["offload"]["offload/grad_bytes"] > 0
    assert released >= 0.95 * moved  # what the offload reports is what the device gave back
    # The allocator handed it to the driver (what vLLM can take): the grad buffers' segments at least (the state's
    # small blocks may share segments with live tensors).
    assert run["driver_freed"] >= 0.9 * off["offload/grad_bytes"]
    assert abs(run["reloaded"] - run["allocated"]) <= 0.05 * moved
    assert run["pinned"] and run["restored"] and run["on_device"]
    assert run["metrics"]["skipped"] == 0.0 and torch.isfinite(torch.tensor(run["metrics"]["loss"]))
