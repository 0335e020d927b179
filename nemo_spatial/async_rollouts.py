"""Overlapped (asynchronous) GRPO: the rollouts of steps s+1..s+k are generated while step s trains.

`trainer.async_rollouts: k` (0: the synchronous loop, which does not use this module). What it computes and
the choices it makes:
- One background thread on the driver runs the generation requests, one at a time, in the order they were
  submitted (a one-worker executor). The prompt stream, the collective weight export and every collective stay
  on the main thread; the thread only waits on the generator's HTTP call.
- Weights are synced between requests, never during one: at a step boundary the loop first waits until every
  submitted request has finished (`wait_idle`), then refits the generator, then submits the next batch. A
  batch submitted at boundary s-j is therefore sampled with the weights of boundary s-j (or newer, after a
  validation's refit), so the lag `trainer version - Rollout.weight_version` is at most k; the loop checks it
  and logs it. With one worker and this rule at most one request is in flight while a step trains, so k > 1
  only buffers (more lag, no more overlap); k = 1 is the useful setting.
- A generator restarted during a request (GeneratorRestartedError; back at weight version 0) fails that
  batch and every batch after it in the queue (they would sample the initial weights); the loop refits and
  `resubmit_failed` generates them again, in order.
- The data position: each batch carries the stream's state right after it was drawn; the loop records the
  state of the batch it trains (`consumed_state`) and the checkpoint saves that one, not the stream's own
  (which is k batches ahead). A run killed with rollouts in flight loses them, and the resumed run draws and
  generates those prompts again: none is trained twice, none skipped. (The stream's logged counters, data/epoch
  and the skipped rows, include the prefetched batches.)
The policy lag is corrected by truncated importance sampling (algorithm.tis): the trainer's pi_old against
the sampling log-probs, which now differ by up to k updates, not only by kernels (algorithms/rollout_correction).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nemo_spatial.contracts import Prompt
from nemo_spatial.generation.types import Rollout, StaleRolloutError

logger = logging.getLogger(__name__)

# The driver's generation of one batch: its step index (0-based) and prompts -> rollouts, or None when the
# generator was restarted during the request (push the weights, then generate again).
GenerateFn = Callable[[int, Sequence[Prompt]], "list[Rollout] | None"]


@dataclass
class PrefetchedBatch:
    """One step's prompts (driver only; [] elsewhere), the stream position after them, and their rollouts."""

    step_index: int  # 0-based: the batch of GRPO step step_index + 1
    prompts: list[Prompt]
    data_state: dict[str, Any]
    future: Future[list[Rollout] | None] | None = None  # driver only
    seconds: float = 0.0  # how long its request ran on the background thread
    metrics: dict[str, float] = field(default_factory=dict)  # the generator's phase metrics of that request

    def result(self) -> list[Rollout] | None:
        """The rollouts (waits for the request); None if the generator was restarted during it."""
        assert self.future is not None, "only the driver holds the requests"
        return self.future.result()


@dataclass
class RolloutQueue:
    """The driver's queue of prefetched batches; the other ranks keep a queue of the same length (no requests),
    so that every rank takes the same branches without asking the driver."""

    generate: GenerateFn
    is_driver: bool
    # The generator's metrics of the request just finished (per-server busy time, groups, tail: what the
    # synchronous loop logs from release_memory), read on the background thread before the next request starts.
    phase_metrics: Callable[[], dict[str, float]] | None = None
    batches: deque[PrefetchedBatch] = field(default_factory=deque)
    _restarted: bool = False  # a request failed with a restart: later ones are failed too, until resubmitted

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollouts") if self.is_driver else None

    def __len__(self) -> int:
        return len(self.batches)

    def submit(self, batch: PrefetchedBatch) -> None:
        """Queue `batch`; on the driver its request starts when the ones before it have finished."""
        self.batches.append(batch)
        self._start(batch)

    def _start(self, batch: PrefetchedBatch) -> None:
        if self._executor is not None:
            batch.future = self._executor.submit(self._run, batch)

    def _run(self, batch: PrefetchedBatch) -> list[Rollout] | None:
        if self._restarted:  # the server lost the pushed weights: this batch would sample the initial ones
            return None
        start = time.perf_counter()
        rollouts = self.generate(batch.step_index, batch.prompts)
        batch.seconds = time.perf_counter() - start
        if rollouts is None:
            self._restarted = True
        elif self.phase_metrics is not None:
            batch.metrics = self.phase_metrics()
        return rollouts

    def wait_idle(self) -> None:
        """Return once no request is in flight (a failure stays in its batch's future, raised by `result`)."""
        for batch in self.batches:
            if batch.future is not None:
                batch.future.exception()

    def resubmit_failed(self) -> None:
        """After a refit: generate again, in order, every batch a restarted generator failed (driver; idle)."""
        if not self.is_driver or not self._restarted:
            return
        self.wait_idle()
        self._restarted = False
        for batch in self.batches:
            if batch.future is not None and batch.future.exception() is None and batch.future.result() is None:
                self._start(batch)

    def head(self) -> PrefetchedBatch:
        return self.batches[0]

    def pop(self) -> PrefetchedBatch:
        return self.batches.popleft()

    def close(self) -> None:
        """Drop the queued batches; a request in flight is waited for (the generator must not be closed under
        it: a server 'restart' could follow), the ones not started are cancelled."""
        self.batches.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def lag_metrics(rollouts: Sequence[Rollout], version: int, limit: int) -> dict[str, float]:
    """`rollout/policy_lag/{mean,max}`: trainer version minus each rollout's sampling version; refuses > limit."""
    lags = [version - r.weight_version for r in rollouts if r.ok]
    if not lags:
        return {}
    if max(lags) > limit or min(lags) < 0:
        raise StaleRolloutError(
            f"rollouts were sampled with weight versions {sorted({version - lag for lag in lags})} while the "
            f"trainer is at version {version}: the lag must lie in [0, trainer.async_rollouts={limit}]"
        )
    return {"rollout/policy_lag/mean": sum(lags) / len(lags), "rollout/policy_lag/max": float(max(lags))}
