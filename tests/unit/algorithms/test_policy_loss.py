"""The clipped surrogate: hand-computed tokens, gradients, metrics, padding robustness, a reference."""

import math
import zlib

import pytest
import torch

from nemo_spatial.algorithms import LossScale, ppo_clip_loss, truncated_is_weights
from tests.unit.algorithms.reference import reference_aggregate, reference_token_loss

# Six tokens chosen to hit every branch (clip_low 0.2, clip_high 0.3, dual_clip 3):
#   t1  A=+1  r=1.5  L = max(-1.5, -1.3) = -1.3   clipped high (no gradient)
#   t2  A=+1  r=0.5  L = max(-0.5, -0.8) = -0.5   pessimistic side, not clipped (gradient -A r = -0.5)
#   t3  A=-1  r=0.5  L = max( 0.5,  0.8) =  0.8   clipped low (no gradient)
#   t4  A=-1  r=4.0  L = min(max(4, 1.3), 3) = 3  dual clip (no gradient)
#   t5  A=-1  r=2.0  L = min(max(2, 1.3), 3) = 2  unclipped (gradient -A r = 2)
#   t6  A=+2  r=1.0  L = -2                       unclipped (gradient -A r = -2)
# Batch layout (2, 4): row 0 = t1 t2 t3 t6, row 1 = t4 t5 pad pad.
RATIOS = [[1.5, 0.5, 0.5, 1.0], [4.0, 2.0, 1.0, 1.0]]
ADVANTAGES = [[1.0, 1.0, -1.0, 2.0], [-1.0, -1.0, 0.0, 0.0]]
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
TOKEN_LOSS = [[-1.3, -0.5, 0.8, -2.0], [3.0, 2.0, 0.0, 0.0]]
TOKEN_GRAD = [[0.0, -0.5, 0.0, -2.0], [0.0, 2.0, 0.0, 0.0]]  # dL/dlogp = -A r where unclipped


def _inputs():
    old = torch.log(torch.tensor([[0.5, 0.4, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4]]))
    log_probs = (old + torch.log(torch.tensor(RATIOS))).requires_grad_(True)
    return log_probs, old, torch.tensor(ADVANTAGES)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", 2.0 / 6),  # (-1.3 - 0.5 + 0.8 - 2 + 3 + 2) / 6 tokens
        ("seq-mean-token-mean", (-3.0 / 4 + 5.0 / 2) / 2),  # row means -0.75 and 2.5
        ("seq-mean-token-sum", (-3.0 + 5.0) / 2),  # row sums -3 and 5
    ],
)
def test_hand_computed_loss_and_gradient(mode, expected):
    log_probs, old, advantages = _inputs()
    out = ppo_clip_loss(log_probs, old, advantages, MASK, aggregation=mode)
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    out.loss.backward()
    assert log_probs.grad is not None
    if mode == "token-mean":
        torch.testing.assert_close(log_probs.grad, torch.tensor(TOKEN_GRAD) / 6)


def test_sum_norm_and_global_scale():
    log_probs, old, advantages = _inputs()
    # Dr.GRPO's normaliser: sum of token losses 2.0 / (2 sequences * L = 4).
    out = ppo_clip_loss(
        log_probs, old, advantages, MASK, aggregation="seq-mean-token-sum-norm", scale=LossScale(norm_length=4)
    )
    assert out.loss.item() == pytest.approx(2.0 / 8)
    # A global token count of 12 (this micro-batch is half the global batch) halves the token-mean.
    out = ppo_clip_loss(log_probs, old, advantages, MASK, scale=LossScale(num_tokens=12))
    assert out.loss.item() == pytest.approx(2.0 / 12)


def test_metrics_hand_computed():
    log_probs, old, advantages = _inputs()
    m = ppo_clip_loss(log_probs, old, advantages, MASK).metrics
    assert float(m.clip_frac_high) == pytest.approx(1 / 6)  # t1
    assert float(m.clip_frac_low) == pytest.approx(1 / 6)  # t3
    assert float(m.dual_clip_frac) == pytest.approx(1 / 6)  # t4
    # ppo_kl = mean(old - new) = -mean(log r) = -log(1.5 * 0.5 * 0.5 * 1 * 4 * 2) / 6 = -log(3) / 6
    assert float(m.ppo_kl) == pytest.approx(-math.log(3) / 6, abs=1e-6)
    assert float(m.ratio_mean) == pytest.approx(9.5 / 6) and float(m.ratio_max) == pytest.approx(4.0)
    assert int(m.num_tokens) == 6
    assert set(m.to_dict()) >= {"actor/clip_frac_high", "actor/dual_clip_frac", "actor/ppo_kl"}


def test_dual_clip_off_and_symmetric_clip():
    log_probs, old, advantages = _inputs()
    # Without the dual clip t4 costs max(4, 1.3) = 4 instead of 3: the token-mean grows by 1/6.
    out = ppo_clip_loss(log_probs, old, advantages, MASK, dual_clip=None)
    assert out.loss.item() == pytest.approx(3.0 / 6, abs=1e-6) and float(out.metrics.dual_clip_frac) == 0
    # With clip_high 0.6 t1 (r = 1.5) is inside the band: -1.5 instead of -1.3.
    out = ppo_clip_loss(log_probs, old, advantages, MASK, clip_high=0.6)
    assert out.loss.item() == pytest.approx(1.8 / 6, abs=1e-6)


def test_padding_garbage_never_leaks():
    log_probs, old, advantages = _inputs()
    clean = ppo_clip_loss(log_probs, old, advantages, MASK)
    dirty_logp = log_probs.detach().clone()
    dirty_logp[1, 2:] = float("-inf")
    dirty_logp.requires_grad_(True)
    dirty_old, dirty_adv = old.clone(), advantages.clone()
    dirty_old[1, 2], dirty_adv[1, 3] = float("nan"), float("inf")
    out = ppo_clip_loss(dirty_logp, dirty_old, dirty_adv, MASK)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(clean.loss.item())
    assert dirty_logp.grad is not None and torch.isfinite(dirty_logp.grad).all()
    assert torch.equal(dirty_logp.grad[1, 2:], torch.zeros(2))


def test_extreme_ratio_is_finite():
    # log r = 50 would overflow exp in float32 without the [-20, 20] clamp; with A > 0 the token is clipped.
    log_probs = torch.tensor([[50.0, -50.0]], requires_grad=True)
    out = ppo_clip_loss(log_probs, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and log_probs.grad is not None and torch.isfinite(log_probs.grad).all()


def test_advantages_per_sample_broadcast():
    log_probs, old, _ = _inputs()
    per_sample = torch.tensor([0.5, -1.0])
    a = ppo_clip_loss(log_probs, old, per_sample, MASK).loss
    b = ppo_clip_loss(log_probs, old, per_sample[:, None].expand(2, 4), MASK).loss
    assert a.item() == b.item()


def test_bad_arguments_are_named():
    log_probs, old, advantages = _inputs()
    with pytest.raises(ValueError, match=r"old_log_probs \(2, 3\)"):
        ppo_clip_loss(log_probs, old[:, :3], advantages, MASK)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        ppo_clip_loss(log_probs, old, advantages, MASK, dual_clip=0.9)
    with pytest.raises(ValueError, match="clip_low must be in"):
        ppo_clip_loss(log_probs, old, advantages, MASK, clip_low=1.0)
    with pytest.raises(KeyError, match="unknown loss aggregation 'mean'"):
        ppo_clip_loss(log_probs, old, advantages, MASK, aggregation="mean")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("dual_clip", [3.0, None])
@pytest.mark.parametrize("with_tis", [False, True])
def test_against_reference_on_random_tensors(mode, dual_clip, with_tis):
    """Loss against the per-token float reference; gradient against central differences of that reference."""
    gen = torch.Generator().manual_seed(zlib.crc32(repr((mode, dual_clip, with_tis)).encode()))
    batch, length = 6, 9
    old = -torch.rand(batch, length, generator=gen, dtype=torch.float64) * 3
    log_probs = old + torch.randn(batch, length, generator=gen, dtype=torch.float64) * 0.6  # r spans ~0.2..5
    advantages = torch.randn(batch, 1, generator=gen, dtype=torch.float64).expand(batch, length).clone()
    lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    rollout = old + torch.randn(batch, length, generator=gen, dtype=torch.float64) * 0.5
    weights = truncated_is_weights(old, rollout, mask, cap=2.0) if with_tis else None

    logp = log_probs.clone().requires_grad_(True)
    out = ppo_clip_loss(logp, old, advantages, mask, dual_clip=dual_clip, aggregation=mode, is_weights=weights)
    out.loss.backward()
    assert logp.grad is not None

    w = weights.double() if weights is not None else torch.ones_like(old)

    def reference(lp: list[list[float]]) -> float:
        token_losses = [
            [
                reference_token_loss(
                    lp[i][t], float(old[i, t]), float(advantages[i, t]), 0.2, 0.3, dual_clip, float(w[i, t])
                )
                for t in range(length)
            ]
            for i in range(batch)
        ]
        return reference_aggregate(token_losses, mask.tolist(), mode)

    base = log_probs.tolist()
    assert out.loss.item() == pytest.approx(reference(base), rel=1e-5, abs=1e-6)
    h = 1e-6
    for i in range(batch):
        for t in range(length):
            up = [row[:] for row in base]
            down = [row[:] for row in base]
            up[i][t] += h
            down[i][t] -= h
            numeric = (reference(up) - reference(down)) / (2 * h)
            assert float(logp.grad[i, t]) == pytest.approx(numeric, abs=1e-4), (i, t)
