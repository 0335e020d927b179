"""The CPU compatibility layer, exercised in a fresh process (it patches torch for the whole process)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nemo_spatial.parallel import cpu_compat

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the layer is active only where there is no GPU")


@pytest.fixture(scope="module")
def probed() -> dict[str, Any]:
    from nemo_spatial.parallel.launch import spawn
    from tests.unit.parallel.compat_probe import probe

    return spawn(probe, nprocs=1)[0]  # type: ignore[no-any-return]


def test_it_activates_once_and_only_in_the_process_that_asks(probed: dict[str, Any]) -> None:
    assert probed["active_before"] is False and probed["activated"] is True and probed["activate_again"] is True
    assert probed["nccl_activates"] is False and probed["active_after_nccl"] is False  # the backend decides
    assert not cpu_compat.is_active()  # this test process was never patched
    assert torch.cuda.current_device.__module__ == "torch.cuda"


def test_cuda_placement_lands_on_cpu(probed: dict[str, Any]) -> None:
    assert probed["devices"] == ["cpu"] * 5


def test_tensor_type_names_are_cuda_ones(probed: dict[str, Any]) -> None:
    assert probed["types"] == ["torch.cuda.FloatTensor", "torch.cuda.BFloat16Tensor", "torch.cuda.LongTensor"]


def test_custom_function_backward_may_allocate_on_cuda(probed: dict[str, Any]) -> None:
    assert probed["grad"] == [2.0, 2.0, 2.0]


def test_streams_events_nvtx_and_memory_stats_are_inert(probed: dict[str, Any]) -> None:
    assert probed["memory"] == 0


def test_megatron_rng_tracker_forks_a_reproducible_stream(probed: dict[str, Any]) -> None:
    assert probed["fork_differs"] and probed["default_restored"] and probed["fork_advances"]
    assert probed["fork_reproducible"]
    assert probed["queued_calls_growth"] == 0  # torch's lazy-call queue would grow by a stack trace per fork


def test_torch_dynamo_still_builds_its_rules(probed: dict[str, Any]) -> None:
    assert probed["dynamo_rules"]


@pytest.fixture(scope="module")
def scoped() -> dict[str, Any]:
    from nemo_spatial.parallel.launch import spawn
    from tests.unit.parallel.compat_probe import probe_scoped

    return spawn(probe_scoped, nprocs=1)[0]  # type: ignore[no-any-return]


def test_the_policy_refuses_to_start_without_the_cpu_mode(scoped: dict[str, Any]) -> None:
    """state.initialize (which building the policy calls) and the bridge's import name the function to call."""
    initialize_refusal, bridge_refusal = scoped["refusals"]
    assert initialize_refusal.startswith("RuntimeError") and "cpu_compat.activate(cfg.parallel)" in initialize_refusal
    assert bridge_refusal.startswith("RuntimeError") and "Transformer Engine" in bridge_refusal
    assert "cpu_compat.activate(cfg.parallel)" in bridge_refusal


def test_scoped_switches_everything_on_for_the_block(scoped: dict[str, Any]) -> None:
    assert scoped["on"] and scoped["inside_device"] == "cpu" and scoped["inside_grad"] == [2.0, 2.0, 2.0]
    assert scoped["bridge_imported"]  # through the Transformer Engine stand-in


def test_scoped_restores_torch_on_exit(scoped: dict[str, Any]) -> None:
    assert scoped["off_after"] and scoped["torch_restored"] and scoped["backward_restored"]
    assert scoped["hooks_restored"] and scoped["mode_stack_after"] == 0
    assert scoped["after_cuda_alloc"] != ""  # "cuda" means CUDA again: no GPU here, so torch raises


def test_this_test_process_never_initializes_megatron_without_it() -> None:
    from nemo_spatial.parallel.config import ParallelConfig
    from nemo_spatial.parallel.state import initialize

    with pytest.raises(RuntimeError, match=r"cpu_compat\.activate\(cfg\.parallel\)"):
        initialize(ParallelConfig())
