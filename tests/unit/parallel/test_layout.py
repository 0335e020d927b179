"""ParallelConfig and layout validation: bad layouts fail at start-up with the values and the fix."""

from __future__ import annotations

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.parallel.config import ParallelConfig
from nemo_spatial.parallel.layout import check_model_fits, check_runtime, check_sequence_length, resolve_layout


def test_data_parallel_is_the_rest_of_the_world() -> None:
    layout = resolve_layout(ParallelConfig(tensor_model_parallel_size=2, pipeline_model_parallel_size=2), 8)
    assert (layout.tensor, layout.pipeline, layout.context, layout.data) == (2, 2, 1, 2)
    assert resolve_layout(ParallelConfig(), 3).data == 3


def test_sizes_that_do_not_divide_the_world_name_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by TP\*PP\*CP = 4\*1\*1 = 4.*multiple of 4"):
        resolve_layout(ParallelConfig(tensor_model_parallel_size=4), 6)


def test_sequence_parallel_without_tensor_parallel_is_rejected() -> None:
    with pytest.raises(
        ConfigError, match="sequence_parallel=true needs tensor parallelism.*tensor_model_parallel_size>=2"
    ):
        ParallelConfig(sequence_parallel=True)
    with pytest.raises(ConfigError, match="sequence_parallel"):
        load_config(None, ["parallel.sequence_parallel=true"])


@pytest.mark.parametrize("key", ["tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"])
def test_sizes_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"parallel.{key}=0 must be an integer >= 1"):
        ParallelConfig(**{key: 0})


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ConfigError, match="parallel.backend='mpi'.*auto, nccl, gloo"):
        ParallelConfig(backend="mpi")


def test_sequence_length_must_split_as_sequence_and_context_parallel_need() -> None:
    sp = resolve_layout(ParallelConfig(tensor_model_parallel_size=4, sequence_parallel=True), 4)
    assert sp.sequence_multiple == 4
    check_sequence_length(sp, 8192)
    with pytest.raises(ConfigError, match="sequence length 8190 is not a multiple of 4.*use 8192"):
        check_sequence_length(sp, 8190)
    cp = resolve_layout(
        ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True, context_parallel_size=3), 6
    )
    assert cp.sequence_multiple == 6  # lcm(TP=2, 2*CP=6)
    no_sp = resolve_layout(ParallelConfig(tensor_model_parallel_size=2), 2)
    assert no_sp.sequence_multiple == 1
    check_sequence_length(no_sp, 8191)


def test_model_must_split_over_the_layout() -> None:
    layout = resolve_layout(ParallelConfig(tensor_model_parallel_size=4, pipeline_model_parallel_size=2), 8)
    check_model_fits(layout, num_layers=36, num_attention_heads=16, num_query_groups=4)
    with pytest.raises(ConfigError, match="35 layers, not divisible by parallel.pipeline_model_parallel_size=2"):
        check_model_fits(layout, num_layers=35, num_attention_heads=16, num_query_groups=4)
    with pytest.raises(
        ConfigError, match="2 key/value heads.*tensor_model_parallel_size=4 must divide both.*divides 2"
    ):
        check_model_fits(layout, num_layers=36, num_attention_heads=16, num_query_groups=2)


def test_runtime_checks_pick_the_backend_and_refuse_what_this_machine_cannot_run() -> None:
    assert check_runtime(ParallelConfig(), cuda_available=False, transformer_engine_available=False) == "gloo"
    assert check_runtime(ParallelConfig(), cuda_available=True, transformer_engine_available=True) == "nccl"
    with pytest.raises(ConfigError, match="backend=nccl needs CUDA.*backend=gloo"):
        check_runtime(ParallelConfig(backend="nccl"), cuda_available=False, transformer_engine_available=False)
    with pytest.raises(ConfigError, match="context_parallel_size=2 needs Transformer Engine.*context_parallel_size=1"):
        check_runtime(ParallelConfig(context_parallel_size=2), cuda_available=False, transformer_engine_available=False)
