"""A run that trains nothing fails with the reason instead of exiting 0."""

import pytest

from nemo_spatial.idle_guard import IdleGuard, NoTrainingError

TRAINED = {"actor/loss": 0.1, "rollout/dropped_groups": 0.0}
DROPPED = {"rollout/dropped_groups": 4.0, "rollout/unused_groups": 0.0}


def test_consecutive_steps_without_an_update_fail_with_the_reason() -> None:
    guard = IdleGuard(limit=3, prompts_per_step=4)
    guard.observe(1, DROPPED)
    guard.observe(2, DROPPED)
    guard.observe(3, TRAINED)  # an update resets the count
    guard.observe(4, DROPPED)
    guard.observe(5, DROPPED)
    with pytest.raises(NoTrainingError, match=r"3 consecutive steps \(to step 6\) trained nothing: .*4 of 4 prompts"):
        guard.observe(6, DROPPED)


def test_a_short_run_that_never_trained_fails_at_its_end() -> None:
    guard = IdleGuard(limit=3, prompts_per_step=4)
    guard.observe(1, {"rollout/dropped_groups": 0.0, "rollout/unused_groups": 2.0})
    with pytest.raises(NoTrainingError, match="without training a step: 2 complete group.*policy.micro_batch_size"):
        guard.observe(2, {"rollout/dropped_groups": 0.0, "rollout/unused_groups": 2.0}, finished=True)


def test_limit_zero_only_checks_the_end_and_a_run_that_trained_passes() -> None:
    guard = IdleGuard(limit=0, prompts_per_step=4)
    for step in range(1, 10):
        guard.observe(step, DROPPED)
    guard.observe(10, TRAINED, finished=True)
