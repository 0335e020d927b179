"""Which saved optimizer states can load into this run's optimizer, and the message when one cannot."""

from __future__ import annotations

import pytest

from nemo_spatial.models.qwen25_vl.checkpoint import optimizer_unloadable
from nemo_spatial.parallel.layout import Layout

TP2 = Layout(world_size=2, tensor=2, pipeline=1, context=1, data=1, sequence_parallel=False)
DP2 = Layout(world_size=2, tensor=1, pipeline=1, context=1, data=2, sequence_parallel=False)


def _info(tensor: int = 2, pipeline: int = 1, distributed: bool | None = True) -> dict:
    info = {"step": 3, "tensor": tensor, "pipeline": pipeline, "data": 1}
    if distributed is not None:
        info["distributed_optimizer"] = distributed
    return info


def test_same_split_and_kind_loads_and_dp_may_change():
    assert optimizer_unloadable(_info(), TP2, distributed=True) is None
    assert optimizer_unloadable(_info(tensor=1), DP2, distributed=True) is None


def test_checkpoints_without_the_kind_are_assumed_to_match():
    assert optimizer_unloadable(_info(distributed=None), TP2, distributed=False) is None


@pytest.mark.parametrize(
    ("info", "distributed", "message"),
    [
        (_info(tensor=1), True, "optimizer state for TP=1 PP=1 and this run is TP=2 PP=1"),
        (_info(pipeline=2, tensor=1), True, "resume with the saved TP and PP"),
        (_info(distributed=True), False, "resume with policy.optimizer.use_distributed_optimizer=true"),
        (_info(distributed=False), True, "saved with policy.optimizer.use_distributed_optimizer=false"),
    ],
)
def test_a_mismatch_says_what_to_change(info, distributed, message):
    assert message in (optimizer_unloadable(info, TP2, distributed) or "")
