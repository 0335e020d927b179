"""`Trainer.fit` driven by fakes of its interfaces (tests/unit/trainer/loop_fakes.py): no Megatron, no vLLM.

Branches: groups the generator could not run are dropped whole (and whole groups left out to split evenly);
a step with no complete group trains nothing and pushes no weights; a run resumed mid-way continues the data,
the step and the weight version, and gives the generator its weights before the first rollout; a failing
reward service stops the run with its error and the last checkpoint intact; a preemption signal to one rank of
two (a real gloo group) stops both after the same step with a checkpoint; a generation server restarted in a
two-process run is refit by every rank and asked again (on_server_death=restart with several processes).
"""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist

from nemo_spatial.checkpoint import latest_checkpoint, load_trainer_state
from nemo_spatial.errors import ConfigError
from nemo_spatial.parallel.collectives import LocalCollectives
from nemo_spatial.parallel.launch import spawn
from nemo_spatial.reward.client import RewardServiceError
from nemo_spatial.trainer import Trainer
from tests.unit.trainer.loop_fakes import (
    FakeGenerator,
    FakePixelPreparer,
    FakePolicy,
    FakePrompts,
    FakeReward,
    config,
    decode,
    logged,
    metrics_logger,
)


def _trainer(cfg, policy=None, generator=None, reward=None, prompts=None):  # type: ignore[no-untyped-def]
    return Trainer(
        cfg, policy or FakePolicy(), prompts or FakePrompts(), generator or FakeGenerator(), reward or FakeReward(),
        metrics_logger(cfg), cfg.run_dir, pad_id=0, decode=decode, collectives=LocalCollectives(),
    )  # fmt: skip


def test_a_step_trains_on_every_group_and_refits_the_generator_at_the_next_boundary(tmp_path):
    cfg = config(tmp_path, "logging.rollout_sample_every=1")
    generator, policy = FakeGenerator(), FakePolicy()
    trainer = _trainer(cfg, policy, generator)
    trainer.fit()
    metrics = logged(cfg)
    assert [m["step"] for m in metrics] == [1, 2, 3] and trainer.version == 3
    assert generator.pushes == [1, 2]  # before steps 2 and 3; step 1 samples the initial weights (version 0)
    # The phase hooks (placement=colocated wakes / sleeps the engines): woken before the refit, released after.
    step = ["prepare_for_generation", "update_weights", "generate", "release_memory"]
    assert generator.events == step[:1] + step[2:] + step + step
    assert policy.trained_rows == [4, 4] * 3  # 4 prompts x n=2 in updates of 2 prompts
    assert all(m["rollout/dropped_groups"] == 0 and m["data/truncated"] == 1.0 for m in metrics)
    assert "actor/mismatch/kl_k1" in metrics[0] and "actor/pg_loss" in metrics[0]  # rollout log-probs reached the loss
    sample = json.loads((cfg.run_dir / "rollouts" / "step_000001" / "rollouts.json").read_text())
    assert set(sample) == {"prompt", "ground_truth", "samples"} and len(sample["samples"]) == 2
    assert list(sample["samples"][0]) == ["response", "scene_graph", "reward", "error"]


def test_failed_groups_are_dropped_whole_and_the_rest_split_evenly(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=1", "policy.micro_batch_size=4", "trainer.prompts_per_update=4")
    policy = FakePolicy(micro_batch_size=4)
    trainer = _trainer(cfg, policy, FakeGenerator(fail_rows={1}))
    trainer.fit()
    (metrics,) = logged(cfg)
    # 3 complete groups of 2 = 6 samples; batches of 4 samples take 2 groups, so one more is left out.
    assert metrics["rollout/dropped_groups"] == 1 and metrics["rollout/unused_groups"] == 1
    assert policy.trained_rows == [4]


def test_a_step_without_a_complete_group_trains_nothing_and_the_run_goes_on(tmp_path):
    cfg = config(tmp_path)
    generator, policy = FakeGenerator(fail_rows={0, 1, 2, 3}), FakePolicy()
    trainer = _trainer(cfg, policy, generator)
    trainer.fit()
    metrics = logged(cfg)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert metrics[0]["rollout/dropped_groups"] == 4 and "actor/loss" not in metrics[0]
    assert policy.trained_rows == [4, 4] * 2 and trainer.version == 2  # steps 2 and 3 trained, step 1 did not
    assert generator.pushes == [1]  # nothing to push before step 2 (step 1 trained nothing); version 1 before 3


def test_a_run_resumed_mid_way_continues_data_step_and_weights(tmp_path):
    cfg = config(tmp_path, "trainer.total_steps=2", "trainer.save_every=1")
    first = _trainer(cfg)
    first.fit()
    weight = float(first.policy.weight.detach())
    cfg = config(tmp_path, "trainer.total_steps=4", "trainer.save_every=1")
    generator, policy, prompts = FakeGenerator(), FakePolicy(), FakePrompts()
    resumed = _trainer(cfg, policy, generator, prompts=prompts)
    resumed.fit()
    assert float(policy.weight.detach()) != weight and policy.step == 2 * 2 + 2 * 2
    # The new generator starts at version 0: the first step's refit gives it the checkpoint's weights (2).
    assert generator.pushes == [2, 3] and resumed.version == 4
    assert generator.rows_seen[0] == 8 and prompts.offset == 16  # the data continued after the 8 rows used
    assert [m["step"] for m in logged(cfg)] == [1, 2, 3, 4]
    assert load_trainer_state(latest_checkpoint(cfg.run_dir)).weight_version == 4


def test_a_failing_reward_service_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    cfg = config(tmp_path, "trainer.save_every=1")
    trainer = _trainer(cfg, reward=FakeReward(fail_after=1))
    with pytest.raises(RewardServiceError, match="refused the connection"):
        trainer.fit()
    checkpoint = latest_checkpoint(cfg.run_dir)
    assert checkpoint is not None and load_trainer_state(checkpoint).step == 1


def test_a_restarted_generator_is_refit_and_asked_again(tmp_path):
    cfg = config(tmp_path)
    generator = FakeGenerator(restart_on_calls={3})  # dies during step 3's request, after version 2 was pushed
    trainer = _trainer(cfg, generator=generator)
    trainer.fit()
    assert generator.pushes == [1, 2, 2] and generator.calls == 4
    assert len(logged(cfg)) == 3


# ---- two trainer processes over gloo ------------------------------------------------------------------------
def _two_rank_worker(rank: int, tmp: str, signal_rank: int | None, restart_calls: list[int]) -> dict:
    from pathlib import Path

    from nemo_spatial.parallel.collectives import TorchCollectives

    dist.init_process_group("gloo")
    try:
        cfg = config(Path(tmp), "trainer.total_steps=4", "trainer.save_every=0")
        policy = FakePolicy(rank=rank, size=2, micro_batch_size=1, signal_at_step=4 if rank == signal_rank else None)
        driver = rank == 0
        generator = FakeGenerator(restart_on_calls=set(restart_calls)) if driver else None
        pixels = FakePixelPreparer()  # the driver's prompts come without pixel_values; each rank makes its own
        trainer = Trainer(
            cfg, policy, FakePrompts(pixels=False) if driver else None, generator, FakeReward() if driver else None,
            metrics_logger(cfg, enabled=driver), cfg.run_dir, pad_id=0, decode=decode if driver else None,
            collectives=TorchCollectives(), prepare_pixels=pixels,
        )  # fmt: skip
        trainer.fit()
        return {
            "step": trainer.step,
            "version": trainer.version,
            "pushes": generator.pushes if generator else None,
            "latest": str(latest_checkpoint(cfg.run_dir)),
            "rows": policy.trained_rows,
            "prepared": pixels.calls,
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_both_after_the_same_step_with_a_checkpoint(tmp_path):
    # Rank 1's 4th optimizer step is in GRPO step 2 (2 updates a step): it alone gets SIGUSR1.
    driver, other = spawn(_two_rank_worker, nprocs=2, args=(str(tmp_path), 1, []))
    assert driver["step"] == other["step"] == 2
    assert driver["latest"] == other["latest"] and driver["latest"].endswith("step_000002")
    assert other["rows"] == [2, 2, 2, 2]  # each rank trains on its half of each update's 4 samples
    # Each rank prepared the images of its own rows' prompts only, each prompt of a step once over both ranks
    # (4 prompts a step, 2 updates of 2 prompts x n=2, 1 sample a rank a micro-batch: rank 0 has prompts 0, 2).
    assert driver["prepared"] == [[0, 2], [4, 6]] and other["prepared"] == [[1, 3], [5, 7]]


@pytest.mark.distributed
def test_a_restarted_generation_server_is_refit_by_every_rank(tmp_path):
    """on_server_death=restart with two trainer processes: the refit after the restart is collective."""
    driver, other = spawn(_two_rank_worker, nprocs=2, args=(str(tmp_path), None, [3]))
    assert driver["step"] == other["step"] == 4 and driver["version"] == other["version"] == 4
    assert driver["pushes"] == [1, 2, 2, 3]


def test_validation_scores_the_weights_of_the_step_it_follows(tmp_path):
    """The refit is at the next step's start; a validation after step k must first give the generator step k's
    weights (it scored the weights before the last update when it did not)."""
    cfg = config(tmp_path, "data.val_files=synthetic:4:0@val", "trainer.val_every=1")
    generator = FakeGenerator()
    trainer = Trainer(
        cfg, FakePolicy(), FakePrompts(), generator, FakeReward(), metrics_logger(cfg), cfg.run_dir, pad_id=0,
        decode=decode, collectives=LocalCollectives(), val_prompts=FakePrompts(),
    )  # fmt: skip
    trainer.fit()
    assert generator.pushes == [1, 2, 3]  # one push per update, each before the validation that follows it
    assert all("val/reward/overall/mean" in m for m in logged(cfg))


def test_colocated_offloads_the_optimizer_before_the_engines_wake_and_reloads_after_they_sleep(tmp_path):
    """placement=colocated: per generation phase (each step's, each validation's) one offload before the wake,
    one reload after the sleep and before any training; policy.offload_during_generation=false: none."""
    cfg = config(tmp_path, "generation.placement=colocated", "data.val_files=synthetic:4:0@val", "trainer.val_every=2",
                 "trainer.val_before_train=true", "trainer.save_every=1")  # fmt: skip
    generator = FakeGenerator()
    policy = FakePolicy(events=generator.events)
    trainer = Trainer(
        cfg, policy, FakePrompts(), generator, FakeReward(), metrics_logger(cfg), cfg.run_dir, pad_id=0,
        decode=decode, collectives=LocalCollectives(), val_prompts=FakePrompts(),
    )  # fmt: skip
    trainer.fit()
    wake, sleep = ["offload", "prepare_for_generation"], ["release_memory", "reload"]
    phase = [*wake, "update_weights", "generate", *sleep]
    step = [*phase, "train_step", "train_step"]
    first = [*wake, "generate", *sleep]  # version 0: nothing to push
    train = ["train_step", "train_step"]
    # Validation before training; steps 1-3, a validation after step 2 (its refit pushes step 2's weights, so
    # step 3 has none to push).
    assert generator.events == [*first, *first, *train, *step, *phase, *first, *train]
    metrics = [m for m in logged(cfg) if "timing/step_s" in m]  # the steps' (not the validation before step 1)
    assert [m["timing/offload_s"] for m in metrics] == [0.5] * 3 and all(m["timing/reload_s"] == 0.25 for m in metrics)
    assert metrics[0]["offload/optimizer_bytes"] == 12.0 and metrics[0]["offload/grad_bytes"] == 4.0

    off = config(tmp_path / "off", "generation.placement=colocated", "policy.offload_during_generation=false")
    events: list[str] = []
    _trainer(off, FakePolicy(events=events), FakeGenerator(events=events)).fit()
    assert "offload" not in events and "reload" not in events and events.count("prepare_for_generation") == 3


def test_offload_during_generation_is_refused_where_no_engine_shares_the_gpus(tmp_path):
    with pytest.raises(ConfigError, match="policy.offload_during_generation=true .* generation.placement='apart'"):
        config(tmp_path, "policy.offload_during_generation=true")
    assert not config(tmp_path).offloads_during_generation  # apart, the key unset: nothing to offload
