"""Loss aggregation: modes by hand, and micro-batch accumulation invariance (1 x 4 == 4 x 1 == 2 x 2)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_spatial.algorithms import LOSS_AGGREGATIONS, AlgorithmConfig, LossScale, actor_loss, aggregate_loss
from tests.unit.algorithms.reference import reference_aggregate

MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def test_modes_hand_computed():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])  # the third sequence is empty: counted nowhere
    assert aggregate_loss(values, mask, "token-mean").item() == pytest.approx(16 / 4)
    assert aggregate_loss(values, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 10) / 2)
    assert aggregate_loss(values, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 10) / 2)
    scale = LossScale(norm_length=3)
    assert aggregate_loss(values, mask, "seq-mean-token-sum-norm", scale).item() == pytest.approx(16 / (2 * 3))


def test_global_scale_from_masks_and_empty_batches():
    masks = [torch.tensor([[1, 1, 0], [0, 0, 0]]), torch.tensor([[1, 1, 1]])]
    assert LossScale.for_global_batch(masks, norm_length=3) == LossScale(num_tokens=5.0, num_seqs=2.0, norm_length=3)
    empty = torch.zeros(2, 3)
    for mode in MODES:
        loss = aggregate_loss(torch.full((2, 3), float("nan")), empty, mode, LossScale(norm_length=3))
        assert loss.item() == 0.0  # nothing valid: 0, never nan
    with pytest.raises(ValueError, match="needs LossScale.norm_length > 0"):
        aggregate_loss(empty, empty, "seq-mean-token-sum-norm")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=5, max_size=5), min_size=1, max_size=6),
    st.lists(st.integers(0, 5), min_size=6, max_size=6),
    st.sampled_from(MODES),
)
def test_against_reference(rows, lengths, mode):
    values = torch.tensor(rows, dtype=torch.float64)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths[: len(rows)])[:, None]
    got = aggregate_loss(values, mask, mode, LossScale(norm_length=5)).item()
    assert got == pytest.approx(reference_aggregate(rows, mask.tolist(), mode, norm_length=5), rel=1e-9, abs=1e-9)


# ---- micro-batch accumulation invariance (TRL-style: micro-batch 1 x 4 accumulation == 4 x 1) ------------


def _policy_log_probs(theta: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """A tiny differentiable 'policy': every token's log-prob depends on the shared parameters theta (D,)."""
    return -torch.nn.functional.softplus(features @ theta)


def _batch(seed: int, batch: int = 4, length: int = 7, dim: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, length, dim, generator=gen, dtype=torch.float64)
    theta0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        old = _policy_log_probs(theta0, features)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = 1  # very unequal lengths: where per-micro-batch normalisation goes wrong
    return {
        "features": features,
        "theta0": theta0,
        "old": old,
        "ref": old + 0.3 * torch.randn(batch, length, generator=gen, dtype=torch.float64),
        "rollout": old + 0.2 * torch.randn(batch, length, generator=gen, dtype=torch.float64),
        "advantages": torch.randn(batch, generator=gen, dtype=torch.float64),
        "mask": torch.arange(length)[None, :] < lengths[:, None],
    }


def _accumulated(cfg: AlgorithmConfig, data: dict[str, torch.Tensor], micro: int, global_scale: bool):
    """Summed loss and gradient over micro-batches of `micro` sequences, as gradient accumulation would."""
    theta = (data["theta0"] + 0.4).requires_grad_(True)  # a few steps away from the old policy: ratios != 1
    chunks = [slice(i, i + micro) for i in range(0, data["mask"].shape[0], micro)]
    scale = (
        LossScale.for_global_batch([data["mask"][c] for c in chunks], cfg.loss_norm_length) if global_scale else None
    )
    total = torch.zeros((), dtype=torch.float64)
    for c in chunks:
        out = actor_loss(
            cfg,
            _policy_log_probs(theta, data["features"][c]),
            data["old"][c],
            data["advantages"][c],
            data["mask"][c],
            ref_log_probs=data["ref"][c],
            rollout_log_probs=data["rollout"][c],
            scale=scale,
        )
        out.loss.backward()
        total = total + out.loss.detach()
    if not global_scale:  # the naive alternative: average the per-micro-batch means
        total = total / len(chunks)
    assert theta.grad is not None
    grad = theta.grad / (1 if global_scale else len(chunks))
    return total, grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tis", [False, True])
def test_micro_batch_accumulation_invariance(mode, tis):
    cfg = AlgorithmConfig(loss_aggregation=mode, loss_norm_length=7, tis=tis, kl_coef=0.05)
    data = _batch(seed=3)
    whole_loss, whole_grad = _accumulated(cfg, data, micro=4, global_scale=True)  # 1 x 4
    for micro in (1, 2):  # 4 x 1 and 2 x 2
        loss, grad = _accumulated(cfg, data, micro=micro, global_scale=True)
        torch.testing.assert_close(loss, whole_loss, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-6, atol=1e-7)


def test_without_global_scale_token_mean_depends_on_the_cut():
    # The invariance above is not automatic: averaging per-micro-batch token-means (upstream's behaviour
    # when micro-batches have different token counts) weights the 1-token sequence 4x too much.
    cfg = AlgorithmConfig(kl_coef=0.05)
    data = _batch(seed=3)
    whole_loss, _ = _accumulated(cfg, data, micro=4, global_scale=False)
    split_loss, _ = _accumulated(cfg, data, micro=1, global_scale=False)
    assert abs(whole_loss.item() - split_loss.item()) > 1e-3


def test_registry_has_the_modes():
    assert set(LOSS_AGGREGATIONS.names()) == {*MODES, "upstream-microbatch-mean"}  # the last: test_upstream_*
