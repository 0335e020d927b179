"""One weight sync to several generation servers at once: a `WeightSyncControl` that fans each call out.

What it computes: every lifecycle call (`init_transfer`, `start_update`, `update`, `finish_update`) is sent to
all member servers concurrently, so a transport drives N servers as it drives one:
- with `ShmTransport` each bucket is written ONCE to /dev/shm and every server on this host loads the same
  file (the write is the trainer's cost; N servers do not make it N writes);
- with `BroadcastTransport` the group holds the trainer and the workers of all servers (world = 1 + the sum of
  their world sizes) and each bucket is ONE broadcast; `init_transfer` gives each server its own rank offset.
A server that dies mid-sync is dropped from the rest of the sync and recorded in `failed` (the others finish
it; the router restarts or reports that one). With the broadcast transport a dead member leaves the
collective broken for everyone, so there the whole sync fails and is retried after the restart.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nemo_spatial.generation.client import HttpControl
from nemo_spatial.generation.types import GeneratorUnavailableError


class FanoutControl:
    """The lifecycle calls of a weight sync, sent to every live member in parallel (thread-safe for the shm
    transport's pipelined `update`: each call waits for all members)."""

    def __init__(self, controls: list[HttpControl], rank_offsets: list[int] | None = None) -> None:
        if not controls:
            raise ValueError("a fan-out needs at least one server")
        self.controls = list(controls)
        self.rank_offsets = rank_offsets or [1] * len(controls)
        self.failed: dict[int, GeneratorUnavailableError] = {}  # member index -> why it left this sync
        self._pool = ThreadPoolExecutor(max_workers=len(controls), thread_name_prefix="weight-fanout")

    def _all(self, call: Callable[[int, HttpControl], None]) -> None:
        live = [i for i in range(len(self.controls)) if i not in self.failed]
        if not live:
            raise GeneratorUnavailableError("every generation server of this weight sync died during it")
        futures = {i: self._pool.submit(call, i, self.controls[i]) for i in live}
        first_other: BaseException | None = None
        for i, future in futures.items():
            error = future.exception()
            if isinstance(error, GeneratorUnavailableError):
                self.failed[i] = error
            elif error is not None and first_other is None:
                first_other = error
        if first_other is not None:
            raise first_other
        if len(self.failed) == len(self.controls):
            raise next(iter(self.failed.values()))

    def init_transfer(self, init_info: dict[str, Any]) -> None:
        self._all(lambda i, c: c.init_transfer({**init_info, "rank_offset": self.rank_offsets[i]}))

    def start_update(self, version: int) -> None:
        self._all(lambda _, c: c.start_update(version))

    def update(self, update_info: dict[str, Any]) -> None:
        self._all(lambda _, c: c.update(update_info))

    def finish_update(self, version: int) -> None:
        self._all(lambda _, c: c.finish_update(version))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
