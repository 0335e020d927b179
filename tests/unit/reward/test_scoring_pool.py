"""The scoring processes: results in order and equal to in-process scoring, coalescing, recovery from a crash."""

import asyncio
import os
import signal

import numpy as np
import psutil
import pytest

from nemo_spatial.reward import RewardScorer
from nemo_spatial.reward.examples import worked_samples
from nemo_spatial.reward.scoring_pool import ScoringPool, WorkerCrashed
from nemo_spatial.reward.service_model import SCORE_OUTPUTS, ScoringRequest

SAMPLES = [*worked_samples().values()] * 5  # 60 samples


def _request(samples, preset="spatialthinker"):
    columns = [[getattr(s, f) for s in samples] for f in ("response", "ground_truth", "problem")]
    return ScoringRequest(*columns, segments=[(preset, False, 0, len(samples))], shape=(len(samples),))


def _expected(samples, preset="spatialthinker"):
    results = RewardScorer(preset, "trigram").score_batch(samples).results
    return np.array([[getattr(r, f) for r in results] for f in SCORE_OUTPUTS.values()], dtype=np.float32)


async def _until(condition, timeout_s=60.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_pool_scores_in_order_coalesces_small_requests_and_survives_a_crash():
    async def scenario():
        pool = ScoringPool(workers=2, chunk_size=16, similarity="trigram")
        await pool.start()
        try:
            assert pool.ready and pool.similarity_name == "trigram" and len(pool.worker_pids) == 2
            # One large request: split into 4 pieces over both processes, answers back in order.
            scores = await pool.score(_request(SAMPLES))
            assert np.array_equal(scores.values, _expected(SAMPLES)) and scores.errors == [""] * len(SAMPLES)
            # 30 small requests at once: the dispatcher packs waiting pieces into jobs of up to 16 samples.
            jobs_before = pool.stats.jobs
            small = [SAMPLES[i : i + 2] for i in range(0, 60, 2)]
            answers = await asyncio.gather(*(pool.score(_request(s)) for s in small))
            for samples, answer in zip(small, answers, strict=True):
                assert np.array_equal(answer.values, _expected(samples))
            assert pool.stats.jobs - jobs_before < len(small) and max(pool.stats.pieces_per_job) > 1
            # Per-sample errors come back in their place; another preset scores with its own rules.
            bad = _request([SAMPLES[0], SAMPLES[0].__class__("x", "y", "no size here")])
            assert (await pool.score(bad)).errors[1].startswith("ValueError: prompt has no 'Image size")
            r1v = await pool.score(_request(SAMPLES[:3], "r1v"))
            assert np.array_equal(r1v.values, _expected(SAMPLES[:3], "r1v"))
            # A scoring process dies while idle: the dispatcher sees the broken pool and replaces it first.
            os.kill(pool.worker_pids[0], signal.SIGKILL)
            await _until(lambda: pool.broken)  # the pool learns of it through the forkserver, asynchronously
            assert np.array_equal((await pool.score(_request(SAMPLES[:4]))).values, _expected(SAMPLES[:4]))
            assert pool.stats.crashes == 1 and not pool.broken
            # One dies while scoring: the request fails with WorkerCrashed (503, retried), the next one succeeds.
            victim, dispatched = pool.worker_pids[0], pool.stats.samples
            big = asyncio.ensure_future(pool.score(_request(SAMPLES * 100)))  # ~0.5 s of work on an idle machine
            await _until(lambda: pool.stats.samples > dispatched)
            assert not big.done()
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(WorkerCrashed, match="retry it"):
                await big
            assert np.array_equal((await pool.score(_request(SAMPLES))).values, _expected(SAMPLES))
            assert pool.stats.crashes == 2
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_empty_request_needs_no_process():
    async def scenario():
        pool = ScoringPool(workers=1, chunk_size=4, similarity="trigram")
        return await pool.score(_request([]))

    scores = asyncio.run(scenario())
    assert scores.values.shape == (5, 0) and scores.errors == []


def test_close_stops_every_process_even_right_after_one_died():
    # The death races shutdown: CPython's pool may miss it and wait for ever on a live process blocked on the
    # queue lock the dead one held. close() must still return, with no process left running.
    async def scenario():
        pool = ScoringPool(workers=2, chunk_size=4, similarity="trigram")
        await pool.start()
        processes = [psutil.Process(pid) for pid in pool.worker_pids]
        os.kill(processes[0].pid, signal.SIGKILL)
        await asyncio.wait_for(pool.close(grace_s=2.0), timeout=60)
        return processes

    for process in asyncio.run(scenario()):
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
