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


def test_a_rank_builds_only_its_rows_with_each_prompts_image_once():
    import torch

    from nemo_spatial.rollouts import build_policy_batch, minibatch_rows, rank_rows
    from tests.unit.trainer.loop_fakes import FakePrompts

    prompts = FakePrompts().next_batch(4)
    n = 2
    rollouts = [Rollout(f"{p}", i, [5, 6 + p], [-0.1, -0.2], 0, "stop") for p in range(4) for i in range(n)]
    shares = rank_rows(minibatch_rows(4, n, 2), rank=1, size=2)
    assert shares == [[2, 3], [6, 7]]  # the second half of each optimizer step's 4 samples
    rows = [i for share in shares for i in share]
    own = {p: prompts[p] for p in (1, 3)}  # all this rank was handed
    batch = build_policy_batch(own, rollouts, n, torch.arange(8.0), pad_id=0, rows=rows)
    assert batch.batch_size == 4 and batch.advantages.tolist() == [2.0, 3.0, 6.0, 7.0]
    assert batch.image_grid_thw.shape[0] == 2 and batch.image_index.tolist() == [0, 0, 1, 1]
    assert batch.pixel_values[:, 0].unique().tolist() == [1.0, 3.0]  # prompts 1 and 3, once each
    assert batch.rollout_log_probs[0, 5:7].tolist() == pytest.approx([-0.1, -0.2])
    with pytest.raises(ValueError, match=r"need prompts \[0\]"):
        build_policy_batch(own, rollouts, n, torch.arange(8.0), pad_id=0, rows=[0, 1])
