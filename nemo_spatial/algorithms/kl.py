"""Per-token KL estimators between the policy and the reference policy, and the KL loss term.

Tokens x are sampled from the policy pi; with log_probs = log pi(x), ref_log_probs = log pi_ref(x) and
d = ref_log_probs - log_probs, each estimator maps (B, T) log-probs to a (B, T) estimate of KL(pi || pi_ref)
(J. Schulman, "Approximating KL divergence", 2020). Registry `KL_ESTIMATORS`, verl/EasyR1 names as aliases:
- "k1" ("kl"):          log_probs - ref_log_probs = -d. Unbiased, high variance, can be negative. As a loss
                         its gradient grad(log pi) has zero expectation: a metric or reward penalty, not a loss.
- "k2" ("mse"):         0.5 * d^2. Biased, >= 0; as a loss its gradient d * -grad(log pi) is an unbiased
                         estimate of grad KL(pi || pi_ref).
- "k3" ("low_var_kl"):  exp(d) - d - 1. Unbiased, >= 0, low variance; upstream SpatialThinker's choice. As a
                         loss its gradient (1 - pi_ref/pi) grad(log pi) estimates grad KL(pi_ref || pi), the
                         forward KL; that is what upstream optimises, and so do we.
Clamping: k3 is clamped to [-10, 10] as upstream (one token the reference finds very unlikely would
otherwise dominate the batch; beyond the clamp the token gets no KL gradient). Its d is also clamped to
[-20, 20] before exp: that clamp is OURS (SpatialThinker's EasyR1 fork computes `kl.exp()` of the raw
difference; later EasyR1 and verl added the same clamp). It changes nothing unless |d| > 20, where k3 is
already past the [-10, 10] clamp, so the value is upstream's; only the overflow (inf, nan gradient) is gone.
k1 and k2 are not clamped (upstream neither).

`kl_loss` aggregates the estimate with the same aggregation as the policy loss (upstream: token-mean) and
returns it WITHOUT the coefficient (upstream 0.01); the caller adds kl_coef * loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nemo_spatial.algorithms.aggregation import LossScale, aggregate_loss, check_same_shape, masked_mean, upcast
from nemo_spatial.algorithms.registry import Registry

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")
register_kl = KL_ESTIMATORS.register

K3_LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


@register_kl("k1", "kl")
def kl_k1(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k1 = log_probs - ref_log_probs. (B, T), (B, T) -> (B, T)."""
    return upcast(log_probs) - upcast(ref_log_probs)


@register_kl("k2", "mse")
def kl_k2(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log_probs - ref_log_probs)^2. (B, T), (B, T) -> (B, T)."""
    return 0.5 * (upcast(log_probs) - upcast(ref_log_probs)).square()


@register_kl("k3", "low_var_kl")
def kl_k3(
    log_probs: torch.Tensor, ref_log_probs: torch.Tensor, max_value: float | None = K3_VALUE_CLAMP
) -> torch.Tensor:
    """k3 = exp(d) - d - 1, d = clamp(ref - logp, +-20), clamped to [-max_value, max_value]. (B, T) -> (B, T)."""
    d = (upcast(ref_log_probs) - upcast(log_probs)).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    k3 = torch.exp(d) - d - 1
    return k3 if max_value is None else k3.clamp(-max_value, max_value)


@dataclass
class KLOutput:
    """`loss`: the aggregated estimate (scalar, differentiable, no coefficient); `mean`: its token mean (detached)."""

    loss: torch.Tensor
    mean: torch.Tensor


def kl_loss(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    estimator: str = "low_var_kl",
    aggregation: str = "token-mean",
    scale: LossScale | None = None,
) -> KLOutput:
    """The KL term: per-token `estimator` over (B, T) log-probs, aggregated like the policy loss.

    Padded positions are zeroed before the estimator, so -inf or nan log-probs there give neither a nan loss
    nor a nan gradient.
    """
    check_same_shape(log_probs=log_probs, ref_log_probs=ref_log_probs, response_mask=response_mask)
    mask = response_mask.bool()
    log_probs = torch.where(mask, log_probs, torch.zeros_like(log_probs))
    ref_log_probs = torch.where(mask, ref_log_probs, torch.zeros_like(ref_log_probs))
    per_token = KL_ESTIMATORS.get(estimator)(log_probs, ref_log_probs)
    loss = aggregate_loss(per_token, mask, aggregation, scale)
    return KLOutput(loss=loss, mean=masked_mean(per_token.detach(), mask))
