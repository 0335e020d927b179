"""Failed generation groups are dropped whole, and what remains splits over DP ranks x micro-batch size."""

from __future__ import annotations

import pytest

from nemo_spatial.generation.types import Rollout
from nemo_spatial.rollouts import keep_complete_groups, trainable_group_count


def _rollouts(num_prompts: int, n: int, failed: set[int]) -> list[Rollout]:
    return [
        Rollout(
            f"0:{p}",
            i,
            [] if p in failed else [1, 2],
            [] if p in failed else [-0.1, -0.2],
            0,
            "stop",
            error=f"prompt {p} too long" if p in failed else None,
        )
        for p in range(num_prompts)
        for i in range(n)
    ]


def test_a_group_with_any_failed_sample_is_dropped_whole():
    rollouts = _rollouts(4, 3, failed={1})
    rollouts[7].error = "engine error"  # one sample of prompt 2
    groups = keep_complete_groups(rollouts, 4, 3)
    assert groups.kept == [0, 3] and groups.dropped == 2
    assert groups.errors == ["prompt 1 too long", "engine error"]


def test_the_rollout_count_must_match_the_prompts():
    with pytest.raises(ValueError, match="expected 4 x 3 rollouts, got 11"):
        keep_complete_groups(_rollouts(4, 3, set())[:-1], 4, 3)


@pytest.mark.parametrize(
    ("complete", "n", "multiple", "usable"),
    [
        (8, 4, 8, 8),  # nothing dropped: all of them
        (7, 4, 8, 6),  # DP=2 x micro-batch 4: groups go in pairs
        (7, 8, 4, 7),  # every group of 8 already splits in 4
        (7, 3, 4, 4),  # 3 and 4 share nothing: groups go in fours
        (3, 3, 4, 0),  # too few to train on this step
        (5, 6, 4, 4),  # 6 x 2 = 12 is the smallest multiple of 4
    ],
)
def test_trainable_groups_are_the_most_that_split_evenly(complete, n, multiple, usable):
    assert trainable_group_count(complete, n, multiple) == usable
    assert (usable * n) % multiple == 0 and complete - usable < multiple
