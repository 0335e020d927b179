"""The Megatron policy on GPUs: NCCL, bf16 with Transformer Engine's layer spec, and the FP8 recipes.

Skipped with a reason where there is no CUDA GPU (or no Transformer Engine for FP8); never fails on CPU.
Each test runs the policy in fresh processes (one per GPU, up to 2) so that NCCL groups do not outlive it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_te = pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is None, reason="needs Transformer Engine (NeMo containers ship it)"
)


def _nprocs() -> int:
    return min(2, torch.cuda.device_count())


def _run(rank: int, model_dir: str, batch_tensors: dict, fp8_recipe: str | None) -> dict[str, Any]:
    from nemo_spatial.batch import PolicyBatch
    from nemo_spatial.models.qwen25_vl.config import FP8Config, OptimizerConfig, PolicyConfig
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig
    from tests.distributed.policy_scenarios import stand_in_loss

    fp8 = FP8Config(
        enabled=fp8_recipe is not None, recipe=fp8_recipe or "tensorwise", param_gather=fp8_recipe is not None
    )
    cfg = PolicyConfig(
        hf_path=model_dir, precision="bf16", max_seq_length=256, fp8=fp8, optimizer=OptimizerConfig(lr=1e-4)
    )
    world = int(os.environ["WORLD_SIZE"])  # set by spawn
    parallel = ParallelConfig(tensor_model_parallel_size=world)
    cpu_compat.activate(parallel)  # on a GPU: only the Transformer Engine stand-in, where TE is not installed
    policy = MegatronPolicy(cfg, parallel, seed=1)
    batch = PolicyBatch(**batch_tensors)
    log_probs, _ = policy.compute_log_probs(batch)
    metrics = policy.train_step(batch, stand_in_loss)
    after, _ = policy.compute_log_probs(batch)
    return {
        "backend": policy.state.backend,
        "log_probs": log_probs,
        "after": after,
        "metrics": metrics,
        "max_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def _spawn(model_dir: Path, fp8_recipe: str | None) -> dict[str, Any]:
    from nemo_spatial.parallel.launch import spawn
    from tests.distributed.policy_scenarios import build_batch

    batch = build_batch(model_dir)
    results = spawn(_run, nprocs=_nprocs(), args=(str(model_dir), batch, fp8_recipe))
    return {"batch": batch, **results[0]}


@pytest.fixture(scope="module")
def bf16_run(tiny_model_dir: Path) -> dict[str, Any]:
    return _spawn(tiny_model_dir, None)


def test_nccl_bf16_policy_matches_transformers_and_trains(bf16_run: dict[str, Any], tiny_model_dir: Path) -> None:
    from tests.distributed.policy_scenarios import hf_log_probs_and_entropy

    reference = hf_log_probs_and_entropy(tiny_model_dir, bf16_run["batch"])
    assert bf16_run["backend"] == "nccl"
    torch.testing.assert_close(bf16_run["log_probs"], reference["log_probs"], atol=0.1, rtol=0)  # bf16 vs fp32
    assert bf16_run["metrics"]["skipped"] == 0.0 and torch.isfinite(torch.tensor(bf16_run["metrics"]["loss"]))
    assert not torch.equal(bf16_run["after"], bf16_run["log_probs"])


def _supported(recipe: str) -> bool:
    major, minor = torch.cuda.get_device_capability()
    return (major, minor) >= (8, 9) and (recipe != "blockwise" or major == 9)


@needs_te
@pytest.mark.parametrize("recipe", ["delayed", "tensorwise", "blockwise"])
def test_fp8_recipe_trains_close_to_bf16(recipe: str, bf16_run: dict[str, Any], tiny_model_dir: Path) -> None:
    if not _supported(recipe):
        pytest.skip(f"FP8 recipe {recipe} is not supported on compute capability {torch.cuda.get_device_capability()}")
    run = _spawn(tiny_model_dir, recipe)
    mask = run["batch"]["response_mask"]
    assert run["metrics"]["skipped"] == 0.0
    assert run["metrics"]["loss"] == pytest.approx(bf16_run["metrics"]["loss"], rel=0.1, abs=0.05)
    difference = (run["log_probs"] - bf16_run["log_probs"]).abs()[mask]
    assert float(difference.mean()) < 0.1
