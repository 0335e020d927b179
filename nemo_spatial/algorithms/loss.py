"""The actor loss of one micro-batch, as the trainer calls it: policy loss + kl_coef * KL, with metrics.

    total = POLICY_LOSSES[cfg.policy_loss](log_probs, old_log_probs, advantages, mask, ..., is_weights=w)
            + cfg.kl_coef * kl_loss(log_probs, ref_log_probs, mask, cfg.kl_estimator)
with w = truncated_is_weights(old_log_probs, rollout_log_probs) when cfg.tis, both terms aggregated by
cfg.loss_aggregation under the same LossScale (pass `LossScale.for_global_batch(...)` so that micro-batch
losses sum to the global-batch loss). Under "upstream-microbatch-mean" pass `row_weights`, this micro-batch's
rows' `upstream_microbatch_weights` computed on the whole mini-batch (the trainer carries them in the batch
as `PolicyBatch.loss_weights`); without them the batch given is taken to be the whole mini-batch.
No entropy bonus (upstream has none). The mismatch metrics are computed whenever `rollout_log_probs` is
given, TIS or not, so the trainer can log them every step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from nemo_spatial.algorithms.aggregation import LossScale, upstream_microbatch_weights
from nemo_spatial.algorithms.config import AlgorithmConfig
from nemo_spatial.algorithms.kl import KLOutput, kl_loss
from nemo_spatial.algorithms.policy_loss import POLICY_LOSSES, PolicyLossOutput
from nemo_spatial.algorithms.rollout_correction import MismatchMetrics, rollout_mismatch_metrics, truncated_is_weights
from nemo_spatial.parallel.collectives import Metric, Reduction

# Per micro-batch, a loss is that micro-batch's share of the global-batch loss (LossScale), so the global value
# is their sum, as is the token count; a maximum stays a maximum; every other metric is a mean. Declared per
# metric (parallel.collectives reduces by these), never guessed from a name.
METRIC_REDUCTIONS: dict[str, Reduction] = {
    "actor/loss": Reduction.SUM,
    "actor/pg_loss": Reduction.SUM,
    "actor/kl_loss": Reduction.SUM,
    "actor/num_tokens": Reduction.SUM,
    "actor/ratio_max": Reduction.MAX,
    "mismatch/num_tokens": Reduction.SUM,
    "mismatch/prob_abs_diff_max": Reduction.MAX,
}


def declared(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` with each value a `Metric` of its declared reduction (a mean when not in METRIC_REDUCTIONS)."""
    return {key: Metric(value, METRIC_REDUCTIONS.get(key, Reduction.MEAN)) for key, value in metrics.items()}


@dataclass
class ActorLossOutput:
    loss: torch.Tensor  # scalar: policy loss + kl_coef * KL loss
    policy: PolicyLossOutput
    kl: KLOutput | None
    mismatch: MismatchMetrics | None

    def metrics(self) -> dict[str, float]:
        """Flat `Metric`s (floats with their reduction) for logging; calls .item() once per micro-batch."""
        out = {"actor/pg_loss": self.policy.loss.item(), "actor/loss": self.loss.item()}
        out.update(self.policy.metrics.to_dict("actor/"))
        if self.kl is not None:
            out.update({"actor/kl_loss": self.kl.loss.item(), "actor/kl_mean": self.kl.mean.item()})
        if self.mismatch is not None:
            out.update(self.mismatch.to_dict("mismatch/"))
        return declared(out)


def actor_loss(
    cfg: AlgorithmConfig,
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    ref_log_probs: torch.Tensor | None = None,
    rollout_log_probs: torch.Tensor | None = None,
    scale: LossScale | None = None,
    row_weights: torch.Tensor | None = None,
) -> ActorLossOutput:
    """Loss and metrics of a micro-batch; all tensors (B, T) (advantages may be (B,)); see the module docstring."""
    if cfg.kl_coef > 0 and ref_log_probs is None:
        raise ValueError("algorithm.kl_coef > 0 needs ref_log_probs (the reference model's token log-probs)")
    if cfg.tis and rollout_log_probs is None:
        raise ValueError("algorithm.tis=true needs rollout_log_probs (vLLM's sampling log-probs of the tokens)")
    scale = scale or LossScale()
    if scale.norm_length is None and cfg.loss_norm_length is not None:
        scale = replace(scale, norm_length=cfg.loss_norm_length)
    if cfg.loss_aggregation == "upstream-microbatch-mean":
        # Without the mini-batch's weights, this batch is taken to be the whole mini-batch.
        weights = (
            row_weights
            if row_weights is not None
            else upstream_microbatch_weights(response_mask, cfg.upstream_microbatch_size)
        )
        scale = replace(scale, row_weights=weights)

    mismatch = is_weights = None
    if rollout_log_probs is not None:
        mismatch = rollout_mismatch_metrics(old_log_probs, rollout_log_probs, response_mask, cfg.tis_cap)
        if cfg.tis:
            is_weights = truncated_is_weights(old_log_probs, rollout_log_probs, response_mask, cfg.tis_cap)

    policy = POLICY_LOSSES.get(cfg.policy_loss)(
        log_probs,
        old_log_probs,
        advantages,
        response_mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        dual_clip=cfg.dual_clip,
        aggregation=cfg.loss_aggregation,
        scale=scale,
        is_weights=is_weights,
    )
    loss, kl = policy.loss, None
    if cfg.kl_coef > 0:
        assert ref_log_probs is not None  # checked above
        kl = kl_loss(log_probs, ref_log_probs, response_mask, cfg.kl_estimator, cfg.loss_aggregation, scale)
        loss = loss + cfg.kl_coef * kl.loss
    return ActorLossOutput(loss=loss, policy=policy, kl=kl, mismatch=mismatch)
