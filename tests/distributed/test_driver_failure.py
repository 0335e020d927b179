"""Decisions the ranks must share: a failure on the driver stops every rank with its message (no rank waits in the
broadcast), and a preemption signal that reached one rank stops them all after the same step."""

import pytest
import torch.distributed as dist

from nemo_spatial.parallel.launch import spawn

pytestmark = pytest.mark.distributed


def _worker(rank: int) -> str:
    from nemo_spatial.trainer import DriverFailedError, run_on_driver

    dist.init_process_group("gloo")
    try:
        assert run_on_driver(lambda: {"rollouts": 3}, is_driver=rank == 0) == {"rollouts": 3}

        def dies() -> None:
            raise ConnectionError("generation server at 127.0.0.1:8000 died (exit -9)")

        try:
            run_on_driver(dies, is_driver=rank == 0)
        except DriverFailedError as error:
            return f"other: {error}"
        except ConnectionError as error:
            return f"driver: {error}"
        return "no error"
    finally:
        dist.destroy_process_group()


def test_driver_failure_reaches_every_rank():
    driver, other = spawn(_worker, nprocs=2)
    assert driver == "driver: generation server at 127.0.0.1:8000 died (exit -9)"
    assert other == "other: rank 0 failed: ConnectionError: generation server at 127.0.0.1:8000 died (exit -9)"


def _preemption_worker(rank: int) -> list[bool]:
    from nemo_spatial.trainer import any_rank

    dist.init_process_group("gloo")
    try:
        # Only rank 1 got the signal at the first step boundary; nobody at the second.
        return [any_rank(rank == 1), any_rank(False)]
    finally:
        dist.destroy_process_group()


def test_a_signal_to_one_rank_stops_every_rank():
    assert spawn(_preemption_worker, nprocs=2) == [[True, False], [True, False]]
