"""GRPO's algorithms as pure tensor functions with registries (no Megatron, no vLLM).

    from nemo_spatial.algorithms import compute_advantages, broadcast_to_tokens, actor_loss, LossScale

    adv = compute_advantages("grpo", rewards, prompt_group_ids(num_prompts, n))          # (B,)
    scale = LossScale.for_global_batch(mask for micro-batch in global batch)
    out = actor_loss(cfg.algorithm, logp, old_logp, broadcast_to_tokens(adv, mask), mask,
                     ref_log_probs=ref_logp, rollout_log_probs=vllm_logp, scale=scale)
    out.loss.backward(); log(out.metrics())

Files: advantages.py (grpo, dr_grpo, rloo), policy_loss.py (clipped surrogate, asymmetric + dual clip),
kl.py (k1, k2, k3), aggregation.py (token-mean, seq-mean-*; global normalisation), rollout_correction.py
(truncated IS, vLLM-trainer mismatch metrics), loss.py (the combination), config.py (AlgorithmConfig).
Each file's docstring states its formulas and its departures from upstream.
"""

from nemo_spatial.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    broadcast_to_tokens,
    compute_advantages,
    dr_grpo_advantages,
    grpo_advantages,
    make_groups,
    prompt_group_ids,
    register_advantage,
    rloo_advantages,
    zero_variance_group_fraction,
)
from nemo_spatial.algorithms.aggregation import LOSS_AGGREGATIONS, LossScale, aggregate_loss
from nemo_spatial.algorithms.config import AlgorithmConfig
from nemo_spatial.algorithms.kl import KL_ESTIMATORS, KLOutput, kl_k1, kl_k2, kl_k3, kl_loss, register_kl
from nemo_spatial.algorithms.loss import ActorLossOutput, actor_loss
from nemo_spatial.algorithms.policy_loss import POLICY_LOSSES, PolicyLossMetrics, PolicyLossOutput, ppo_clip_loss
from nemo_spatial.algorithms.rollout_correction import MismatchMetrics, rollout_mismatch_metrics, truncated_is_weights

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "POLICY_LOSSES",
    "ActorLossOutput",
    "AlgorithmConfig",
    "KLOutput",
    "LossScale",
    "MismatchMetrics",
    "PolicyLossMetrics",
    "PolicyLossOutput",
    "actor_loss",
    "aggregate_loss",
    "broadcast_to_tokens",
    "compute_advantages",
    "dr_grpo_advantages",
    "grpo_advantages",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_loss",
    "make_groups",
    "ppo_clip_loss",
    "prompt_group_ids",
    "register_advantage",
    "register_kl",
    "rloo_advantages",
    "rollout_mismatch_metrics",
    "truncated_is_weights",
    "zero_variance_group_fraction",
]
