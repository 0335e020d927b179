"""The clipped-surrogate policy loss with asymmetric and dual clipping, as upstream SpatialThinker (EasyR1).

Per token, with r = exp(log_probs - old_log_probs) and A the token's advantage:
    L     = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))      PPO (Schulman et al. 2017), with the
                                                                         asymmetric "clip-higher" of DAPO
    L     = min(L, -dual_clip * A)     where A < 0                       dual clip (Ye et al. 2020)
    L     = w * L                      optional, w = truncated IS weight (rollout_correction.py)
and the loss is `aggregate_loss(L, response_mask, aggregation, scale)` (upstream: token-mean).
Upstream values: clip_low 0.2, clip_high 0.3, dual_clip 3.0. dual_clip=None turns the dual clip off.

Why dual clip: for A < 0 the PPO objective is unbounded in r (a token whose probability rose a lot gets an
ever larger push down); capping at -c*A bounds that gradient. It binds exactly where A < 0 and r > c.

Numerics and departures: the log-ratio is clamped to [-20, 20] before exp, so one token with a wild ratio
yields a finite loss and gradient. This clamp is OURS: SpatialThinker's EasyR1 fork computes
`ratio = torch.exp(log_probs - old_log_probs)` unclamped (its comment mentions a clamp, its code has none; later
EasyR1 and verl added the same [-20, 20] clamp). It changes nothing unless |log r| > 20, where upstream's loss
overflows to inf/nan. Inputs are upcast to at least float32; padded positions are zeroed
before any arithmetic, so -inf/nan log-probs there produce neither a nan loss nor a nan gradient (upstream
multiplies by the mask after the fact, which lets nan through). Upstream clips via exp(clamp(log r)); we clamp
r itself, which is the same value and gradient.

Metrics (registry `POLICY_LOSSES` functions return them; masked means over this batch's valid tokens):
clip_frac_high (A > 0 and r > 1 + clip_high: no gradient, the update is done), clip_frac_low (A < 0 and
r < 1 - clip_low), dual_clip_frac (A < 0 and r > dual_clip), ppo_kl = mean(old_log_probs - log_probs)
(k1 estimate of KL(pi_old || pi), upstream's "ppo_kl"), ratio_mean, ratio_max.
Under upstream's names as well (logged both ways): pg_clipfrac_higher = clip_frac_high + clip_frac_low
(upstream's `pg_loss < pg_loss2`: the PPO clip binds, on either side) and pg_clipfrac_lower = dual_clip_frac
(upstream's `(max(pg_loss, pg_loss2) > pg_loss3) & (A < 0)`: the dual clip binds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from nemo_spatial.algorithms.aggregation import LossScale, aggregate_loss, check_same_shape, masked_mean, upcast
from nemo_spatial.algorithms.registry import Registry

LOG_RATIO_CLAMP = 20.0

PolicyLossFn = Callable[..., "PolicyLossOutput"]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


@dataclass
class PolicyLossMetrics:
    """Detached scalar tensors over this batch's valid tokens; `num_tokens` weights them across micro-batches."""

    clip_frac_low: torch.Tensor
    clip_frac_high: torch.Tensor
    dual_clip_frac: torch.Tensor
    ppo_kl: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor
    num_tokens: torch.Tensor
    pg_clipfrac_higher: torch.Tensor  # upstream's name: clip_frac_high + clip_frac_low
    pg_clipfrac_lower: torch.Tensor  # upstream's name: dual_clip_frac

    def to_dict(self, prefix: str = "actor/") -> dict[str, float]:
        return {f"{prefix}{name}": float(value) for name, value in asdict(self).items()}


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: PolicyLossMetrics


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    dual_clip: float | None = 3.0,
    aggregation: str = "token-mean",
    scale: LossScale | None = None,
    is_weights: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """Clipped surrogate (see the module docstring).

    log_probs (B, T) with grad, old_log_probs (B, T), advantages (B, T) or (B,) (broadcast over tokens),
    response_mask (B, T) bool/0-1, is_weights (B, T) or None (applied detached) -> scalar loss and metrics.
    """
    _check_clip(clip_low, clip_high, dual_clip)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1).expand(response_mask.shape)
    check_same_shape(log_probs=log_probs, old_log_probs=old_log_probs, advantages=advantages, mask=response_mask)
    mask = response_mask.bool()
    log_probs, old_log_probs, advantages = (_zero_padding(t, mask) for t in (log_probs, old_log_probs, advantages))

    log_ratio = (log_probs - old_log_probs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    clipped_ratio = ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(-advantages * ratio, -advantages * clipped_ratio)
    negative = advantages < 0
    if dual_clip is not None:
        per_token = torch.where(negative, torch.minimum(per_token, -advantages * dual_clip), per_token)
    if is_weights is not None:
        check_same_shape(is_weights=is_weights, mask=response_mask)
        per_token = per_token * _zero_padding(is_weights.detach(), mask)

    loss = aggregate_loss(per_token, mask, aggregation, scale)
    bounds = (1 - clip_low, 1 + clip_high, dual_clip if dual_clip is not None else float("inf"))
    return PolicyLossOutput(loss=loss, metrics=_metrics(ratio.detach(), log_ratio.detach(), advantages, mask, bounds))


def _metrics(
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    bounds: tuple[float, float, float],
) -> PolicyLossMetrics:
    low, high, dual = bounds
    positive, negative = advantages > 0, advantages < 0
    valid_ratio = torch.where(mask, ratio, torch.zeros_like(ratio))
    clip_frac_low = masked_mean((negative & (ratio < low)).float(), mask)
    clip_frac_high = masked_mean((positive & (ratio > high)).float(), mask)
    dual_clip_frac = masked_mean((negative & (ratio > dual)).float(), mask)
    return PolicyLossMetrics(
        clip_frac_low=clip_frac_low,
        clip_frac_high=clip_frac_high,
        dual_clip_frac=dual_clip_frac,
        ppo_kl=masked_mean(-log_ratio, mask),
        ratio_mean=masked_mean(ratio, mask),
        ratio_max=valid_ratio.max() if valid_ratio.numel() else valid_ratio.new_zeros(()),
        num_tokens=mask.sum(),
        pg_clipfrac_higher=clip_frac_high + clip_frac_low,
        pg_clipfrac_lower=dual_clip_frac,
    )


def _zero_padding(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    tensor = upcast(tensor)
    return torch.where(mask, tensor, torch.zeros_like(tensor))


def _check_clip(clip_low: float, clip_high: float, dual_clip: float | None) -> None:
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low must be in [0, 1) (the ratio is clipped at 1 - clip_low), got {clip_low}")
    if clip_high < 0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (Ye et al. 2020) or None to disable it, got {dual_clip}")
