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
