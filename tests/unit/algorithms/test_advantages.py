"""Group advantages: hand-computed values, properties, grouping by id, degenerate groups, a reference."""

import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_spatial.algorithms import (
    ADVANTAGE_ESTIMATORS,
    broadcast_to_tokens,
    compute_advantages,
    dr_grpo_advantages,
    grpo_advantages,
    make_groups,
    prompt_group_ids,
    rloo_advantages,
    zero_variance_group_fraction,
)
from tests.unit.algorithms.reference import reference_advantages

ESTIMATORS = ("grpo", "dr_grpo", "rloo")


def test_grpo_hand_computed():
    # Group 0: rewards 1, 0, 0, 1 -> mean 0.5, deviations +-0.5, unbiased var = 4 * 0.25 / 3 = 1/3,
    # std = sqrt(1/3) = 0.57735; A = +-0.5 / (0.57735 + 1e-6) = +-0.866024.
    # Group 1 (two samples): 0.2, 0.8 -> mean 0.5, deviations -+0.3, var = 0.18 / 1, std = 0.424264,
    # A = -+0.3 / 0.424265 = -+0.707105 (any two distinct rewards give +-1/sqrt(2), up to eps).
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.0, 1.0, 0.8])
    ids = torch.tensor([0, 0, 1, 0, 0, 1])
    a0 = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    a1 = 0.3 / (math.sqrt(0.18) + 1e-6)
    assert a0 == pytest.approx(0.866024, abs=1e-6) and a1 == pytest.approx(0.707105, abs=1e-6)
    expected = torch.tensor([a0, -a0, -a1, -a0, a0, a1])
    torch.testing.assert_close(grpo_advantages(rewards, ids), expected, rtol=0, atol=1e-6)


def test_dr_grpo_and_rloo_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5])
    ids = [0, 0, 0, 0, 1]
    # Dr.GRPO: r - mean = +-0.5; the one-sample group gets 0.
    torch.testing.assert_close(dr_grpo_advantages(rewards, ids), torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0]))
    # RLOO: r = 1 -> others (0, 0, 1) mean 1/3 -> 2/3; r = 0 -> others (1, 0, 1) mean 2/3 -> -2/3.
    two_thirds = 2 / 3
    expected = torch.tensor([two_thirds, -two_thirds, -two_thirds, two_thirds, 0.0])
    torch.testing.assert_close(rloo_advantages(rewards, ids), expected)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_equal_rewards_give_exactly_zero(name):
    # 0.1 summed 8 times is not exactly 0.8 in floating point; the advantage must still be exactly 0, not
    # rounding error / 1e-6.
    rewards = torch.tensor([0.1] * 8 + [0.7] * 3)
    ids = [0] * 8 + [1] * 3
    assert torch.equal(compute_advantages(name, rewards, ids), torch.zeros(11))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_group_of_one_gets_zero_and_a_warning(name, caplog):
    rewards = torch.tensor([0.9, 1.0, 0.0])
    with caplog.at_level(logging.WARNING):
        advantages = compute_advantages(name, rewards, [5, 6, 6])
    assert advantages[0] == 0.0 and advantages[1] > 0 > advantages[2]
    assert "1 of 2 advantage groups have one sample" in caplog.text


def test_groups_are_ids_not_content():
    # Two different images asked the same question: the same text, two prompts, two groups.
    questions = ["Is the man behind the bike?"] * 4
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    by_prompt = grpo_advantages(rewards, prompt_group_ids(num_prompts=2, samples_per_prompt=2))
    # Image 1's samples differ (+-1/sqrt 2); image 2's agree (0, no signal).
    torch.testing.assert_close(by_prompt, torch.tensor([0.7071, -0.7071, 0.0, 0.0]), atol=1e-4, rtol=0)
    # Grouping by the text would pool all four and give the agreeing samples a non-zero advantage.
    by_text = grpo_advantages(rewards, questions)
    assert by_text[2] != 0.0 and not torch.allclose(by_text, by_prompt)


def test_string_ids_and_int_ids_agree():
    rewards = torch.rand(12)
    ints = prompt_group_ids(3, 4)
    uuids = [f"uid-{int(i) * 7919}" for i in ints]
    for name in ESTIMATORS:
        torch.testing.assert_close(compute_advantages(name, rewards, uuids), compute_advantages(name, rewards, ints))


def test_make_groups_and_broadcast():
    groups = make_groups(torch.tensor([9, 4, 9, 4, 2]))
    assert groups.num_groups == 3 and groups.sizes.tolist() == [1, 2, 2]
    assert groups.index.tolist() == [2, 1, 2, 1, 0]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    tokens = broadcast_to_tokens(torch.tensor([0.5, -2.0]), mask)
    assert tokens.tolist() == [[0.5, 0.5, 0.0], [-2.0, 0.0, 0.0]]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"1 non-finite reward\(s\) \(#1=nan\)"):
        grpo_advantages(torch.tensor([1.0, float("nan")]), [0, 0])
    with pytest.raises(ValueError, match="3 rewards but 2 group ids"):
        grpo_advantages(torch.ones(3), [0, 0])
    with pytest.raises(ValueError, match="group_ids must be integer ids"):
        grpo_advantages(torch.ones(2), torch.tensor([0.0, 0.0]))
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo'; use one of: grpo, dr_grpo, rloo"):
        compute_advantages("ppo", torch.ones(2), [0, 0])


def test_dtype_and_empty_batch():
    assert grpo_advantages(torch.tensor([1, 0, 1, 1]), [0, 0, 1, 1]).dtype == torch.float32
    assert grpo_advantages(torch.tensor([1.0, 0.0], dtype=torch.float64), [0, 0]).dtype == torch.float64
    assert grpo_advantages(torch.zeros(0), []).shape == (0,)
    assert zero_variance_group_fraction(torch.tensor([1.0, 1.0, 0.0, 1.0]), [0, 0, 1, 1]) == 0.5


# ---- properties on generated batches ------------------------------------------------------------------

rewards_in_groups = st.lists(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(-2, 2, allow_nan=False), min_size=1, max_size=8),
    min_size=1,
    max_size=6,
)


def _flatten(groups: list[list[float]]) -> tuple[torch.Tensor, list[int]]:
    rewards = [r for group in groups for r in group]
    ids = [g for g, group in enumerate(groups) for _ in group]
    return torch.tensor(rewards, dtype=torch.float64), ids


@settings(max_examples=150, deadline=None)
@given(rewards_in_groups, st.sampled_from(ESTIMATORS), st.randoms(use_true_random=False))
def test_properties(groups, name, rng):
    rewards, ids = _flatten(groups)
    advantages = compute_advantages(name, rewards, ids)
    ids_t = torch.tensor(ids)
    # 1. Every group's advantages sum to ~0 (grpo and dr_grpo by centring; rloo = n/(n-1) * dr_grpo).
    for g in range(len(groups)):
        assert abs(float(advantages[ids_t == g].sum())) < 1e-9
    # 2. Permuting the samples permutes the advantages.
    order = list(range(len(ids)))
    rng.shuffle(order)
    permuted = compute_advantages(name, rewards[order], [ids[i] for i in order])
    torch.testing.assert_close(permuted, advantages[order], rtol=1e-9, atol=1e-9)
    # 3. Renaming the groups changes nothing.
    renamed = compute_advantages(name, rewards, [("prompt", 1000 - g) for g in ids])
    torch.testing.assert_close(renamed, advantages, rtol=0, atol=0)
    # 4. The independent reference agrees.
    expected = reference_advantages(name, rewards.tolist(), ids)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(rewards_in_groups, st.floats(0.1, 10), st.floats(-5, 5))
def test_affine_reward_changes(groups, scale, shift):
    rewards, ids = _flatten(groups)
    spreads = [max(g) - min(g) for g in groups if max(g) > min(g)]
    if all(s * min(scale, 1.0) > 1e-2 for s in spreads):
        # Away from the eps regime (eps / std < 4e-4 here), GRPO ignores a positive affine change of the rewards.
        torch.testing.assert_close(
            grpo_advantages(rewards * scale + shift, ids), grpo_advantages(rewards, ids), rtol=1e-3, atol=1e-3
        )
    # Dr.GRPO and RLOO are shift-invariant and scale linearly.
    for estimator in (dr_grpo_advantages, rloo_advantages):
        torch.testing.assert_close(
            estimator(rewards * scale + shift, ids), estimator(rewards, ids) * scale, rtol=1e-9, atol=1e-9
        )


def test_grpo_groups_have_unit_unbiased_std_and_match_reference_on_random_batches():
    torch.manual_seed(0)
    rewards = torch.rand(512 * 8)  # upstream's rollout: 512 prompts x 8 samples
    ids = prompt_group_ids(512, 8)
    advantages = grpo_advantages(rewards, ids).view(512, 8)
    torch.testing.assert_close(advantages.std(dim=1), torch.ones(512), rtol=1e-4, atol=1e-4)
    for name in ESTIMATORS:
        expected = reference_advantages(name, rewards.tolist(), ids.tolist())
        torch.testing.assert_close(compute_advantages(name, rewards, ids), torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_registry_names():
    assert set(ESTIMATORS) <= set(ADVANTAGE_ESTIMATORS.names())
    with pytest.raises(ValueError, match="already registered"):
        ADVANTAGE_ESTIMATORS.register("grpo")(grpo_advantages)
