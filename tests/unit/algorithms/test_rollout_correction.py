"""Truncated importance sampling and the vLLM-trainer mismatch metrics."""

import math

import pytest
import torch

from nemo_spatial.algorithms import ppo_clip_loss, rollout_mismatch_metrics, truncated_is_weights

# Two valid tokens and one padded one. Token 1: p_trainer 0.3, p_vllm 0.2 -> rho 1.5 (kept);
# token 2: p_trainer 0.9, p_vllm 0.3 -> rho 3.0 (truncated to the cap 2). Padding: -inf vs -inf.
OLD = torch.log(torch.tensor([[0.3, 0.9, 0.0]]))
ROLLOUT = torch.log(torch.tensor([[0.2, 0.3, 0.0]]))
MASK = torch.tensor([[1, 1, 0]], dtype=torch.bool)


def test_truncated_weights_hand_computed():
    weights = truncated_is_weights(OLD, ROLLOUT, MASK, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 2.0, 1.0]]))  # padding gets the neutral 1
    assert not weights.requires_grad
    with pytest.raises(ValueError, match="TIS cap must be > 0"):
        truncated_is_weights(OLD, ROLLOUT, MASK, cap=0.0)


def test_mismatch_metrics_hand_computed():
    m = rollout_mismatch_metrics(OLD, ROLLOUT, MASK, cap=2.0)
    assert m.prob_abs_diff_mean.item() == pytest.approx((0.1 + 0.6) / 2)
    assert m.prob_abs_diff_max.item() == pytest.approx(0.6)
    # k1 = mean(log p_vllm - log p_trainer) = (log(0.2/0.3) + log(0.3/0.9)) / 2 = (-0.405465 - 1.098612) / 2
    assert m.kl_k1.item() == pytest.approx((math.log(2 / 3) + math.log(1 / 3)) / 2)
    # k3 = mean(rho - 1 - log rho) = ((1.5 - 1 - 0.405465) + (3 - 1 - 1.098612)) / 2 = 0.497962
    assert m.kl_k3.item() == pytest.approx(((0.5 - math.log(1.5)) + (2 - math.log(3))) / 2)
    assert m.is_weight_mean.item() == pytest.approx(2.25)
    assert m.is_truncated_fraction.item() == pytest.approx(0.5)
    assert int(m.num_tokens) == 2
    assert all(math.isfinite(v) for v in m.to_dict().values())


def test_identical_log_probs_mean_no_mismatch():
    torch.manual_seed(0)
    logp = -torch.rand(4, 8) * 3
    m = rollout_mismatch_metrics(logp, logp.clone(), torch.ones(4, 8))
    assert m.prob_abs_diff_max.item() == 0.0 and m.kl_k3.item() == 0.0 and m.is_weight_mean.item() == 1.0


def test_weights_scale_the_surrogate_and_its_gradient():
    # With r = 1 (log_probs == old) and A = 1 each token's loss is -w and its gradient -w / N.
    weights = truncated_is_weights(OLD, ROLLOUT, MASK, cap=2.0)
    log_probs = torch.where(MASK, OLD, torch.zeros_like(OLD)).requires_grad_(True)
    out = ppo_clip_loss(log_probs, OLD, torch.ones(1, 3), MASK, is_weights=weights)
    assert out.loss.item() == pytest.approx(-(1.5 + 2.0) / 2)
    out.loss.backward()
    assert log_probs.grad is not None
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.75, -1.0, 0.0]]))


def test_random_against_a_loop():
    gen = torch.Generator().manual_seed(11)
    old = -torch.rand(5, 6, generator=gen, dtype=torch.float64) * 4
    rollout = old + torch.randn(5, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 6, generator=gen) > 0.3
    m = rollout_mismatch_metrics(old, rollout, mask, cap=2.0)
    pairs = [
        (float(a), float(b)) for a, b, ok in zip(old.flatten(), rollout.flatten(), mask.flatten(), strict=True) if ok
    ]
    rhos = [math.exp(a - b) for a, b in pairs]
    assert m.prob_abs_diff_max.item() == pytest.approx(max(abs(math.exp(a) - math.exp(b)) for a, b in pairs))
    assert m.kl_k3.item() == pytest.approx(sum(r - 1 - math.log(r) for r in rhos) / len(rhos))
    assert m.is_truncated_fraction.item() == pytest.approx(sum(r > 2.0 for r in rhos) / len(rhos))
    weights = truncated_is_weights(old, rollout, mask, cap=2.0)
    assert weights[mask].tolist() == pytest.approx([min(r, 2.0) for r in rhos])
