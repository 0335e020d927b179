"""upstream-microbatch-mean: upstream's per-micro-batch token means, averaged, whatever our micro-batching."""

import pytest
import torch

from nemo_spatial.algorithms import AlgorithmConfig, LossScale, actor_loss, aggregate_loss, ppo_clip_loss
from nemo_spatial.algorithms.aggregation import upstream_microbatch_weights
from nemo_spatial.config import load_config
from nemo_spatial.upstream import upstream_loss_weights
from tests.unit.algorithms.test_aggregation import _batch, _policy_log_probs

MODE = "upstream-microbatch-mean"


def _upstream_loop(values: torch.Tensor, mask: torch.Tensor, size: int) -> float:
    """What EasyR1's dp_actor computes: token mean per micro-batch of `size` in order, / gradient accumulation."""
    groups = range(0, values.shape[0], size)
    means = [(values[g : g + size] * mask[g : g + size]).sum() / mask[g : g + size].sum() for g in groups]
    return float(sum(means) / len(means))


def test_hand_computed_and_against_upstreams_loop():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [4.0, 4.0, 0.0], [1.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool()
    weights = upstream_microbatch_weights(mask, 2)  # groups {0,1}: 4 tokens, {2,3}: 3 tokens, {4}: 3 tokens
    torch.testing.assert_close(weights, torch.tensor([1 / 12, 1 / 12, 1 / 9, 1 / 9, 1 / 9], dtype=torch.float64))
    got = aggregate_loss(values, mask, MODE, LossScale(row_weights=weights)).item()
    expected = ((6 + 10) / 4 + (8 + 1) / 3 + 21 / 3) / 3
    assert got == pytest.approx(expected) == pytest.approx(_upstream_loop(values, mask, 2))
    # It is not the token mean (short responses weigh more), except with one group.
    assert got != pytest.approx(aggregate_loss(values, mask, "token-mean").item())
    one_group = LossScale(row_weights=upstream_microbatch_weights(mask, 5))
    assert aggregate_loss(values, mask, MODE, one_group).item() == pytest.approx(46 / 10)


def test_empty_group_counts_and_missing_weights_is_a_clear_error():
    mask = torch.tensor([[1, 1], [0, 0], [0, 0], [1, 0]]).bool()
    weights = upstream_microbatch_weights(torch.tensor([[1, 1], [1, 0], [0, 0], [0, 0]]).bool(), 2)
    assert weights.tolist() == [1 / 6, 1 / 6, 0.0, 0.0]  # G = 2 groups, the second has no token
    with pytest.raises(ValueError, match="needs LossScale.row_weights"):
        aggregate_loss(torch.ones(2, 2), mask[:2], MODE)
    with pytest.raises(ValueError, match=">= 1"):
        upstream_microbatch_weights(mask, 0)


def _loss_and_grad(cfg, data, order, micro):
    """Sum of actor_loss over micro-batches of `micro` rows taken in `order` (weights from the whole batch)."""
    theta = (data["theta0"] + 0.4).requires_grad_(True)
    weights = upstream_microbatch_weights(data["mask"], cfg.upstream_microbatch_size)
    chunks = [order[i : i + micro] for i in range(0, len(order), micro)]
    scale = LossScale.for_global_batch([data["mask"][c] for c in chunks])
    total = torch.zeros((), dtype=torch.float64)
    for c in chunks:
        out = actor_loss(
            cfg, _policy_log_probs(theta, data["features"][c]), data["old"][c], data["advantages"][c],
            data["mask"][c], ref_log_probs=data["ref"][c], scale=scale, row_weights=weights[c],
        )  # fmt: skip
        out.loss.backward()
        total = total + out.loss.detach()
    return total, theta.grad


def test_independent_of_our_micro_batching_and_order():
    cfg = AlgorithmConfig(loss_aggregation=MODE, upstream_microbatch_size=2, kl_coef=0.05)
    data = _batch(seed=5, batch=6)
    whole, whole_grad = _loss_and_grad(cfg, data, torch.arange(6), 6)
    for order, micro in ((torch.tensor([5, 0, 3, 1, 4, 2]), 1), (torch.tensor([2, 4, 0, 5, 1, 3]), 4)):
        loss, grad = _loss_and_grad(cfg, data, order, micro)
        torch.testing.assert_close(loss, whole, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-9, atol=1e-12)
    # Without the mini-batch's weights the batch given is the mini-batch: the same value in one piece.
    theta = data["theta0"] + 0.4
    alone = actor_loss(
        cfg, _policy_log_probs(theta, data["features"]), data["old"], data["advantages"], data["mask"],
        ref_log_probs=data["ref"],
    )  # fmt: skip
    assert alone.loss.item() == pytest.approx(whole.item(), rel=1e-9)
    token_mean = AlgorithmConfig(kl_coef=0.05)
    other, _ = _loss_and_grad(token_mean, data, torch.arange(6), 6)
    assert abs(other.item() - whole.item()) > 1e-4  # the lengths differ: the weighting matters


def test_upstream_clip_fraction_names():
    gen = torch.Generator().manual_seed(0)
    log_probs, old = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    advantages = torch.tensor([1.0, -1.0, 2.0, -0.5])
    mask = torch.ones(4, 9, dtype=torch.bool)
    m = ppo_clip_loss(log_probs, old, advantages, mask).metrics
    # upstream's own definitions (SpatialThinker's EasyR1 compute_policy_loss), computed here directly
    a = advantages[:, None].expand(4, 9)
    ratio = torch.exp(log_probs - old)
    pg1, pg2, pg3 = -a * ratio, -a * ratio.clamp(0.8, 1.3), -a * 3.0
    higher = (pg1 < pg2).float().mean()
    lower = ((torch.maximum(pg1, pg2) > pg3).float() * (a < 0).float()).mean()
    assert float(higher) > 0 and float(lower) > 0  # both clips bind somewhere in this batch
    assert float(m.pg_clipfrac_higher) == pytest.approx(float(higher))
    assert float(m.pg_clipfrac_lower) == pytest.approx(float(lower))
    assert float(m.pg_clipfrac_higher) == pytest.approx(float(m.clip_frac_high + m.clip_frac_low))


def test_one_key_selects_every_upstream_switch(repo_root):
    recipe = repo_root / "conf/recipes/spatialthinker_qwen25vl3b_stvqa7k_1n4g_tp1.yaml"
    assert load_config(recipe).algorithm.loss_aggregation == "token-mean"
    exact = load_config(recipe, ["upstream_exact=true"])
    assert (exact.algorithm.loss_aggregation, exact.algorithm.upstream_microbatch_size) == (MODE, 4)
    if hasattr(exact.reward, "upstream_exact"):  # the reward's switch (its own branch)
        assert exact.reward.upstream_exact is True
    vanilla = load_config(
        repo_root / "conf/recipes/vanilla_grpo_qwen25vl7b_stvqa7k_1n4g_tp2.yaml", ["upstream_exact=true"]
    )
    assert vanilla.algorithm.loss_aggregation == MODE


def test_weights_come_from_each_optimizer_steps_rows_in_order_and_travel_with_their_rows():
    from nemo_spatial.batch import PolicyBatch

    cfg = load_config(
        None, ["algorithm.loss_aggregation=upstream-microbatch-mean", "algorithm.upstream_microbatch_size=2"]
    )
    # two optimizer steps of 4 rows; response lengths 3,1,2,1 | 1,1,1,1
    weights = upstream_loss_weights([3, 1, 2, 1, 1, 1, 1, 1], [[0, 1, 2, 3], [4, 5, 6, 7]], cfg)
    assert weights.tolist() == pytest.approx([1 / 8, 1 / 8, 1 / 6, 1 / 6, 1 / 4, 1 / 4, 1 / 4, 1 / 4])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]]).bool()
    batch = PolicyBatch(
        input_ids=torch.ones(4, 4, dtype=torch.long),
        attention_mask=torch.ones(4, 4),
        response_mask=mask,
        loss_weights=weights[:4],
    )
    assert batch.select([3, 0]).loss_weights.tolist() == pytest.approx([1 / 6, 1 / 8])
    assert upstream_loss_weights([3, 1], [[0, 1]], load_config(None)) is None
