"""nemo_spatial.refit: the driver finishes the collective weight export whatever the generator does with it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
import torch

from nemo_spatial.generation.types import GeneratorRestartedError, SyncStats, WeightSyncError
from nemo_spatial.parallel.collectives import LocalCollectives
from nemo_spatial.refit import refit

WEIGHTS = 5


class CountingPolicy:
    """The export's tensors, counted as they are produced (on several ranks each one is a collective gather)."""

    def __init__(self) -> None:
        self.produced = 0

    def named_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        for i in range(WEIGHTS):
            self.produced += 1
            yield f"w{i}", torch.zeros(2)


class FailingGenerator:
    """Takes one tensor of the push, then fails with `error`."""

    weight_version = 0

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        next(iter(named_tensors))
        raise self.error


@pytest.mark.parametrize("error", [WeightSyncError("bucket 1 refused"), RuntimeError("the server's socket closed")])
def test_a_failed_push_still_walks_the_whole_export_then_raises(error: BaseException) -> None:
    policy = CountingPolicy()
    with pytest.raises(type(error)):
        refit(policy, FailingGenerator(error), LocalCollectives(), version=1, max_restarts=0)  # type: ignore[arg-type]
    assert policy.produced == WEIGHTS  # the other ranks' gathers were all met: they hear the error, not hang


def test_a_restarted_generator_is_pushed_to_again_up_to_max_restarts() -> None:
    policy = CountingPolicy()
    with pytest.raises(Exception, match="could not reach the generator"):
        refit(policy, FailingGenerator(GeneratorRestartedError("back at 0")), LocalCollectives(), 1, max_restarts=2)  # type: ignore[arg-type]
    assert policy.produced == 3 * WEIGHTS
