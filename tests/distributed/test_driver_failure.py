"""A failure on the driver rank stops every rank with its message (no rank waits in the broadcast)."""

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
