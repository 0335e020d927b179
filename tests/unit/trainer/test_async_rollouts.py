"""Overlapped GRPO (`trainer.async_rollouts: k`) through `Trainer.fit` with the loop's fakes.

What must hold: the batch of step s+1 is generated before step s trains (so on weights one version older);
each step logs the policy lag, which stays within k; every prompt is trained once, in the stream's order;
a checkpoint saves the position of the last trained batch (not the prefetched one), so a run that dies with
rollouts in flight resumes with exactly those prompts, generated again; a restarted generator's failed batch
is refit and generated again; the colocated placement is refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from nemo_spatial.checkpoint import latest_checkpoint, load_trainer_state
from nemo_spatial.errors import ConfigError
from nemo_spatial.parallel.collectives import LocalCollectives
from nemo_spatial.reward.client import RewardServiceError
from nemo_spatial.trainer import Trainer
from tests.unit.trainer.loop_fakes import (
    FakeGenerator,
    FakePolicy,
    FakePrompts,
    FakeReward,
    config,
    decode,
    logged,
    metrics_logger,
)


class RowRecordingPolicy(FakePolicy):
    """Records the prompt row of every sample it trains on (the fake prompt's second token is row + 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def train_step(self, batch: Any, loss_fn: Any) -> dict[str, float]:
        self.rows.extend(int(r) - 2 for r in batch.input_ids[:, 1].tolist())
        return super().train_step(batch, loss_fn)


class OrderRecordingGenerator(FakeGenerator):
    """Notes, for each request, the policy's optimizer steps done when it ran and the version it sampled."""

    def __init__(self, policy: FakePolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.requests: list[tuple[int, int]] = []  # (policy optimizer steps at the request, sampled version)

    def generate(self, requests: Any, params: Any) -> Any:
        self.requests.append((self.policy.step, self.version))
        return super().generate(requests, params)


def _trainer(cfg, policy, generator, reward=None, prompts=None):  # type: ignore[no-untyped-def]
    return Trainer(
        cfg, policy, prompts or FakePrompts(), generator, reward or FakeReward(), metrics_logger(cfg),
        cfg.run_dir, pad_id=0, decode=decode, collectives=LocalCollectives(),
    )  # fmt: skip


def _unique_rows(rows: list[int], n: int = 2) -> list[int]:
    """One entry per prompt trained (each prompt's n samples are adjacent rows)."""
    assert all(rows[i : i + n] == [rows[i]] * n for i in range(0, len(rows), n)), rows
    return rows[::n]


def test_the_next_batch_is_generated_while_a_step_trains_and_the_lag_is_logged(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=4", "trainer.async_rollouts=1")
    policy = RowRecordingPolicy()
    generator = OrderRecordingGenerator(policy)
    trainer = _trainer(cfg, policy, generator)
    trainer.fit()
    metrics = logged(cfg)
    assert [m["rollout/policy_lag/max"] for m in metrics] == [0, 1, 1, 1]
    assert [m["rollout/policy_lag/mean"] for m in metrics] == [0, 1, 1, 1]
    # Step 1's batch, then step 2's before step 1 trained (2 optimizer steps a GRPO step); no batch past the end.
    assert generator.requests == [(0, 0), (0, 0), (2, 1), (4, 2)]
    assert generator.pushes == [1, 2, 3] and trainer.version == 4
    assert _unique_rows(policy.rows) == list(range(16))  # every prompt once, in the stream's order
    assert all("actor/mismatch/kl_k1" in m and "timing/generate_background_s" in m for m in metrics)
    # The router's per-server metrics of each step's own request (the sync loop's release_memory ones).
    assert [m["generation/calls"] for m in metrics] == [1, 2, 3, 4]


def test_k2_buffers_two_batches_and_keeps_the_lag_within_k(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=4", "trainer.async_rollouts=2")
    policy = RowRecordingPolicy()
    trainer = _trainer(cfg, policy, FakeGenerator())
    trainer.fit()
    assert [m["rollout/policy_lag/max"] for m in logged(cfg)] == [0, 1, 2, 2]
    assert _unique_rows(policy.rows) == list(range(16))


def test_a_run_dying_with_rollouts_in_flight_resumes_them_and_trains_every_prompt_once(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=4", "trainer.save_every=2", "trainer.async_rollouts=1")
    first_policy, first_prompts = RowRecordingPolicy(), FakePrompts()
    # The reward service fails in step 3, after step 4's batch (rows 12-15) was drawn and queued.
    with pytest.raises(RewardServiceError):
        _trainer(cfg, first_policy, FakeGenerator(), FakeReward(fail_after=2), first_prompts).fit()
    assert first_prompts.offset == 16
    state = load_trainer_state(latest_checkpoint(cfg.run_dir))
    assert state.step == 2 and state.data_state == {"offset": 8}  # the trained prompts only, not the prefetched

    policy, generator, prompts = RowRecordingPolicy(), FakeGenerator(), FakePrompts()
    _trainer(cfg, policy, generator, prompts=prompts).fit()
    assert generator.rows_seen == list(range(8, 16))  # the lost batches generated again, nothing skipped
    assert _unique_rows(first_policy.rows) + _unique_rows(policy.rows) == list(range(16))
    metrics = logged(cfg)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["rollout/policy_lag/max"] for m in metrics[2:]] == [0, 1]  # the resumed run starts synchronously
    assert load_trainer_state(latest_checkpoint(cfg.run_dir)).data_state == {"offset": 16}


def test_a_generator_restarted_during_a_prefetched_request_is_refit_and_asked_again(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=4", "trainer.async_rollouts=1")
    policy = RowRecordingPolicy()
    generator = FakeGenerator(restart_on_calls={3})  # step 3's batch, requested while step 2 trains
    trainer = _trainer(cfg, policy, generator)
    trainer.fit()
    # The failed request is the 3rd of 5; the boundary's refit gives the restarted server version 2 (it had 1),
    # on which step 3's batch is generated again (lag 0).
    assert generator.calls == 5 and generator.pushes == [1, 2, 3]
    assert _unique_rows(policy.rows) == list(range(16))
    assert [m["rollout/policy_lag/max"] for m in logged(cfg)] == [0, 1, 0, 1]


def test_async_rollouts_refuse_the_colocated_placement(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.async_rollouts=1.*generation\.placement=apart"):
        config(tmp_path, "trainer.async_rollouts=1", "generation.placement=colocated")
