"""Scoring processes behind the server, with Triton-style dynamic batching.

The reward is pure Python (GIL-bound), so the server scores in `workers` processes while its event loop only
parses and answers HTTP. Each request is cut into pieces of at most `chunk_size` samples; a dispatcher hands the
processes jobs made of the pieces waiting at that moment (up to `chunk_size` samples), so one large request keeps
every process busy and many small requests from many trainer ranks share a job. No delay is added to wait for
more work (Triton's `max_queue_delay` = 0): a job leaves as soon as a process slot is free, and at most two jobs
per process are outstanding, so a burst waits here, where it can still be coalesced.

One sample costs at most its CPU-time budget (reward.sample_time_budget_s, checked inside the scorer's loops,
batch.py) on top of work linear in its text, and the waiting requests' pieces are taken in turn, one piece of
each request at a time, so a large or expensive request slows the others (by the jobs already handed out, each
at most chunk_size samples) but cannot hold the processes until it is done.

A process that dies (out of memory, killed) breaks Python's pool: the pieces of the jobs it held fail with
WorkerCrashed (the server answers 503, which the client retries), and a fresh pool replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from nemo_spatial.reward.batch import DEFAULT_TIME_BUDGET_S, RewardSample, RewardScorer
from nemo_spatial.reward.service_model import SCORE_OUTPUTS, Scores, ScoringRequest
from nemo_spatial.reward.similarity import LabelSimilarity, make_similarity

logger = logging.getLogger(__name__)

# One job: (preset, upstream_exact, responses, ground truths, problems) per piece;
# its result: (values (5, n) float32, errors).
JobPiece = tuple[str, bool, list[str], list[str], list[str]]
PieceResult = tuple[np.ndarray, list[str]]
_FIELDS = tuple(SCORE_OUTPUTS.values())


class WorkerCrashed(RuntimeError):
    """A scoring process died while it held these samples; the request can be retried."""


# --- in each scoring process -------------------------------------------------------------------------------

_similarity: LabelSimilarity | None = None
_time_budget_s = DEFAULT_TIME_BUDGET_S
_scorers: dict[tuple[str, bool], RewardScorer] = {}


def _init_worker(similarity: str, similarity_model: str, time_budget_s: float = DEFAULT_TIME_BUDGET_S) -> None:
    global _similarity, _time_budget_s
    _time_budget_s = time_budget_s
    # Ctrl-C reaches the whole process group; the server, not the terminal, decides when scoring stops,
    # so a graceful shutdown can finish the requests in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _similarity = make_similarity(similarity, similarity_model)


def _worker_info() -> tuple[int, str]:
    assert _similarity is not None
    return os.getpid(), _similarity.name  # the backend `auto` resolved to, for the model's metadata


def _score_job(job: list[JobPiece]) -> list[PieceResult]:
    results = []
    for preset, upstream_exact, responses, ground_truths, problems in job:
        scorer = _scorers.get((preset, upstream_exact))
        if scorer is None:
            assert _similarity is not None
            scorer = RewardScorer(preset, _similarity, upstream_exact, _time_budget_s)
            _scorers[preset, upstream_exact] = scorer
        rows, errors = [], [""] * len(responses)
        for i, sample in enumerate(map(RewardSample, responses, ground_truths, problems)):
            result = scorer.score_one(sample)
            rows.append([getattr(result, name) for name in _FIELDS])
            if result.error is not None:
                errors[i] = result.error
        values = np.asarray(rows, dtype=np.float32).T.reshape(len(_FIELDS), len(responses))
        results.append((np.ascontiguousarray(values), errors))
    return results


# --- in the server process ---------------------------------------------------------------------------------


@dataclass
class _Piece:
    payload: JobPiece
    future: asyncio.Future[PieceResult]

    def __len__(self) -> int:
        return len(self.payload[2])


@dataclass
class PoolStats:
    jobs: int = 0
    samples: int = 0
    crashes: int = 0
    pieces_per_job: list[int] = field(default_factory=list)  # the last 1000, to see coalescing


class ScoringPool:
    """`workers` scoring processes fed by one dispatcher; `await score(request)` from the event loop."""

    def __init__(
        self,
        workers: int,
        chunk_size: int,
        similarity: str = "auto",
        similarity_model: str = "",
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    ) -> None:
        self.workers = workers
        self.chunk_size = chunk_size
        self._init_args = (similarity, similarity_model or "en_core_web_md", time_budget_s)
        self._context = multiprocessing.get_context("forkserver")  # forking a threaded event loop is unsafe
        self._context.set_forkserver_preload(["nemo_spatial.reward.batch", "numpy", "scipy.optimize"])
        self._executor: ProcessPoolExecutor | None = None
        self._pending: deque[deque[_Piece]] = deque()  # one queue of pieces per request, taken in turn
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(2 * workers)
        self._dispatcher: asyncio.Task[None] | None = None
        self.similarity_name = ""
        self.stats = PoolStats()

    @property
    def worker_pids(self) -> list[int]:
        """The scoring processes running now (a replaced pool starts its processes as work arrives)."""
        return sorted(_worker_processes(self._executor))

    @property
    def broken(self) -> bool:
        """The current pool has lost a process; the dispatcher replaces it before the next job."""
        return bool(getattr(self._executor, "_broken", False))

    @property
    def ready(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        """Start the processes and wait until each has loaded its similarity backend."""
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        # One warm-up call per process: the executor starts a process for each call that finds none idle.
        info = await asyncio.gather(*(loop.run_in_executor(self._executor, _worker_info) for _ in range(self.workers)))
        self.similarity_name = info[0][1]
        self._dispatcher = asyncio.create_task(self._dispatch(), name="reward-dispatcher")

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers, mp_context=self._context, initializer=_init_worker, initargs=self._init_args
        )

    async def score(self, request: ScoringRequest) -> Scores:
        """Score every sample of the request, in order."""
        loop = asyncio.get_running_loop()
        pieces = []
        for preset, upstream_exact, start, stop in request.segments:
            for begin in range(start, stop, self.chunk_size):
                end = min(begin + self.chunk_size, stop)
                payload = (
                    preset,
                    upstream_exact,
                    request.responses[begin:end],
                    request.ground_truths[begin:end],
                    request.problems[begin:end],
                )
                pieces.append(_Piece(payload, loop.create_future()))
        if not pieces:
            return Scores(np.zeros((len(_FIELDS), 0), dtype=np.float32), [])
        self._pending.append(deque(pieces))
        self._wakeup.set()
        results = await asyncio.gather(*(piece.future for piece in pieces))
        values = np.concatenate([values for values, _ in results], axis=1)
        return Scores(values, [error for _, errors in results for error in errors])

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            job = await self._next_job()
            if self.broken:  # a process died while idle: replace the pool first
                self._replace_executor("a scoring process died while idle")
            executor = self._executor
            assert executor is not None
            try:
                future = loop.run_in_executor(executor, _score_job, [piece.payload for piece in job])
            except BrokenProcessPool as error:  # broke since the check: fail these (they are retried)
                self._slots.release()
                self._fail(job, executor, error)
                continue
            future.add_done_callback(partial(self._job_done, job, executor))
            self._record(job)

    async def _next_job(self) -> list[_Piece]:
        """The pieces waiting now, up to chunk_size samples (at least one piece), one request's piece at a time
        in turn: a request of many pieces (or of expensive samples) shares the processes with the requests that
        arrive after it instead of holding them until it is done."""
        job: list[_Piece] = []
        size = 0
        while not job:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            while self._pending and (not job or size + len(self._pending[0][0]) <= self.chunk_size):
                queue = self._pending[0]
                piece = queue.popleft()
                if queue:
                    self._pending.rotate(-1)  # the next request's turn
                else:
                    self._pending.popleft()
                if not piece.future.done():  # skip pieces of requests whose client went away
                    job.append(piece)
                    size += len(piece)
        return job

    def _job_done(self, job: list[_Piece], executor: ProcessPoolExecutor, future: Future[list[PieceResult]]) -> None:
        self._slots.release()
        error = future.exception()
        if error is not None:
            self._fail(job, executor, error)
            return
        for piece, result in zip(job, future.result(), strict=True):
            if not piece.future.done():
                piece.future.set_result(result)

    def _fail(self, job: list[_Piece], executor: ProcessPoolExecutor, error: BaseException) -> None:
        if isinstance(error, BrokenProcessPool):
            if executor is self._executor:  # the first failed job of this pool replaces it
                self._replace_executor(f"a scoring process died while scoring ({error})")
            error = WorkerCrashed(f"a scoring process died while scoring this request ({error}); retry it")
        for piece in job:
            if not piece.future.done():
                piece.future.set_exception(error)

    def _replace_executor(self, reason: str) -> None:
        self.stats.crashes += 1
        logger.error("%s; starting a new pool of %d scoring processes", reason, self.workers)
        assert self._executor is not None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    def _record(self, job: list[_Piece]) -> None:
        self.stats.jobs += 1
        self.stats.samples += sum(map(len, job))
        self.stats.pieces_per_job = [*self.stats.pieces_per_job[-999:], len(job)]

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop dispatching and stop the processes (requests in flight should have finished first).

        Never waits forever. CPython's pool can miss a process that died just before shutdown (its wake-up is
        read before the dead process's sentinel), then wait for a live process that is blocked on the queue
        lock the dead one held; processes still running `grace_s` after shutdown are terminated.
        """
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for piece in (piece for queue in self._pending for piece in queue):
            if not piece.future.done():
                piece.future.set_exception(WorkerCrashed("the server is shutting down; retry on its successor"))
        self._pending.clear()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            processes = list(_worker_processes(executor).values())
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(_stop_processes, processes, grace_s)


def _worker_processes(executor: ProcessPoolExecutor | None) -> dict[int, multiprocessing.process.BaseProcess]:
    """pid -> process of the executor's workers (CPython keeps them in a private dict; None before any start)."""
    return getattr(executor, "_processes", None) or {}


def _stop_processes(processes: list[multiprocessing.process.BaseProcess], grace_s: float) -> None:
    """Join the processes within `grace_s` in all; terminate, then kill, any that are still running."""
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            logger.warning("scoring process %s did not stop within %.0f s; terminating it", process.pid, grace_s)
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join()
