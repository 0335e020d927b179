"""Training-inference mismatch: truncated importance sampling (TIS) and the mismatch metrics.

vLLM samples with its own kernels and precision, so the distribution the tokens were drawn from, mu
(`rollout_log_probs`: vLLM's log-probs of the sampled tokens), is not exactly the trainer's pi_old
(`old_log_probs`: the trainer's forward pass over the same tokens with the same weights). The PPO ratio
pi/pi_old corrects for the policy's drift during the update, not for mu != pi_old.

Truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
Training"; verl's TIS): each token's surrogate loss is multiplied by the detached weight
    w = min(pi_old / mu, C) = min(exp(old_log_probs - rollout_log_probs), C),     C = 2 by default (theirs).
Off by default: upstream SpatialThinker has no correction. The log-ratio is clamped to [-20, 20] before exp.

Metrics, meant to be logged every step whether TIS is on or not (all over valid tokens, p = exp(log p)):
- prob_abs_diff_mean / _max: |p_old - p_mu|, the token-level probability error.
- kl_k1 = mean(rollout - old), kl_k3 = mean(rho - 1 - log rho) with rho = p_old / p_mu: estimates of
  KL(mu || pi_old) from tokens sampled by mu (k3 is >= 0 per token and has low variance).
- is_weight_mean (untruncated rho, tells how far off-policy the batch is), is_truncated_fraction (rho > C).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from nemo_spatial.algorithms.aggregation import check_same_shape, masked_mean, upcast

LOG_RATIO_CLAMP = 20.0
DEFAULT_TIS_CAP = 2.0


@torch.no_grad()
def truncated_is_weights(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    cap: float = DEFAULT_TIS_CAP,
) -> torch.Tensor:
    """w = min(exp(old - rollout), cap), detached, 1 at padding. (B, T) x 3 -> (B, T), at least float32."""
    if cap <= 0:
        raise ValueError(f"the TIS cap must be > 0, got {cap}")
    log_rho = _log_rho(old_log_probs, rollout_log_probs, response_mask)
    return torch.exp(log_rho).clamp(max=cap)


@dataclass
class MismatchMetrics:
    """Detached scalar tensors over the valid tokens of one batch; `num_tokens` weights them across batches."""

    prob_abs_diff_mean: torch.Tensor
    prob_abs_diff_max: torch.Tensor
    kl_k1: torch.Tensor
    kl_k3: torch.Tensor
    is_weight_mean: torch.Tensor
    is_truncated_fraction: torch.Tensor
    num_tokens: torch.Tensor

    def to_dict(self, prefix: str = "mismatch/") -> dict[str, float]:
        return {f"{prefix}{name}": float(value) for name, value in asdict(self).items()}


@torch.no_grad()
def rollout_mismatch_metrics(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    cap: float = DEFAULT_TIS_CAP,
) -> MismatchMetrics:
    """How far the trainer's log-probs (B, T) are from the sampler's (B, T) on the valid tokens."""
    mask = response_mask.bool()
    log_rho = _log_rho(old_log_probs, rollout_log_probs, response_mask)
    rho = torch.exp(log_rho)
    prob_diff = (torch.exp(upcast(old_log_probs)) - torch.exp(upcast(rollout_log_probs))).abs()
    prob_diff = torch.where(mask, prob_diff, torch.zeros_like(prob_diff))  # >= 0, so 0 never wins the max
    return MismatchMetrics(
        prob_abs_diff_mean=masked_mean(prob_diff, mask),
        prob_abs_diff_max=prob_diff.max() if prob_diff.numel() else prob_diff.new_zeros(()),
        kl_k1=masked_mean(-log_rho, mask),
        kl_k3=masked_mean(rho - 1 - log_rho, mask),
        is_weight_mean=masked_mean(rho, mask),
        is_truncated_fraction=masked_mean((rho > cap).float(), mask),
        num_tokens=mask.sum(),
    )


def _log_rho(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log(p_old / p_mu), clamped, 0 at padding (so w = 1 there). (B, T) -> (B, T), at least float32."""
    check_same_shape(old_log_probs=old_log_probs, rollout_log_probs=rollout_log_probs, response_mask=response_mask)
    log_rho = (upcast(old_log_probs) - upcast(rollout_log_probs)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.where(response_mask.bool(), log_rho, torch.zeros_like(log_rho))
