"""KL estimators: hand-computed values, clamping, gradients, the loss term, a reference."""

import math

import pytest
import torch

from nemo_spatial.algorithms import KL_ESTIMATORS, kl_k1, kl_k2, kl_k3, kl_loss
from tests.unit.algorithms.reference import reference_kl


def test_hand_computed():
    # p = 0.5, p_ref = 0.25: log p - log p_ref = log 2 = 0.693147
    logp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))  # 0.693147
    assert kl_k2(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)  # 0.240227
    # k3: d = log(p_ref / p) = log 0.5; exp(d) - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)


def test_k3_clamps_like_upstream():
    # d = ref - logp = 30 -> clamped to 20 before exp (finite), result clamped to 10.
    # d = -30 -> clamped to -20: e^-20 + 20 - 1 = 19.000000002 -> clamped to 10.
    logp = torch.tensor([[-30.0, 0.0, -1.0]])
    ref = torch.tensor([[0.0, -30.0, -1.0]])
    assert kl_k3(logp, ref).tolist() == [[10.0, 10.0, 0.0]]
    assert kl_k3(logp, ref, max_value=None)[0, 1].item() == pytest.approx(19.0)
    # k1 and k2 are not clamped (upstream neither).
    assert kl_k2(logp, ref)[0, 0].item() == pytest.approx(450.0)


def test_k3_is_nonnegative_and_zero_at_equality():
    torch.manual_seed(0)
    logp, ref = -torch.rand(64, 32) * 5, -torch.rand(64, 32) * 5
    assert (kl_k3(logp, ref) >= 0).all() and (kl_k2(logp, ref) >= 0).all()
    assert torch.equal(kl_k3(logp, logp), torch.zeros(64, 32))


def test_k3_gradient_is_one_minus_ref_ratio():
    # d k3 / d logp = 1 - p_ref / p (inside the clamps): p = 0.5, p_ref = 0.25 -> 0.5.
    logp = torch.log(torch.tensor([[0.5]])).requires_grad_(True)
    kl_k3(logp, torch.log(torch.tensor([[0.25]]))).sum().backward()
    assert logp.grad is not None and logp.grad.item() == pytest.approx(0.5)


def test_kl_loss_token_mean_and_padding():
    logp = torch.log(torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.0, 0.0]]))  # log 0 = -inf at padding
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.5], [0.5, 0.3, 0.0]]))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    logp.requires_grad_(True)
    out = kl_loss(logp, ref, mask, "k3")
    # Per valid token: 0.193147, 0, (0.5 + log 2 - 1) = 0.193147, 0 -> mean over 4 tokens.
    assert out.loss.item() == pytest.approx(2 * (0.5 + math.log(2) - 1) / 4)
    assert out.mean.item() == pytest.approx(out.loss.item()) and not out.mean.requires_grad
    out.loss.backward()
    assert logp.grad is not None and torch.isfinite(logp.grad).all()


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "low_var_kl", "kl", "mse"])
def test_against_reference_on_random_tensors(name):
    gen = torch.Generator().manual_seed(7)
    logp = -torch.rand(8, 16, generator=gen) * 4
    ref = logp + torch.randn(8, 16, generator=gen) * 3  # large enough that some k3 values hit the clamp
    ours = KL_ESTIMATORS.get(name)(logp, ref)
    expected = [
        [reference_kl(name, float(a), float(b)) for a, b in zip(ra, rb, strict=True)]
        for ra, rb in zip(logp, ref, strict=True)
    ]
    torch.testing.assert_close(ours, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_aliases_and_unknown_names():
    assert KL_ESTIMATORS.get("low_var_kl") is KL_ESTIMATORS.get("k3")
    assert KL_ESTIMATORS.get("mse") is KL_ESTIMATORS.get("k2")
    with pytest.raises(KeyError, match="unknown KL estimator 'k4'; use one of: k1, kl, k2, mse, k3, low_var_kl"):
        kl_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), "k4")
