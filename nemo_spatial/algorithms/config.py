"""`algorithm:` config section: advantage estimator, policy loss, KL term, aggregation, rollout correction.

Defaults are upstream SpatialThinker's GRPO (../../../shared/docs/upstream-facts.md): grpo advantages, clip
0.2/0.3, dual clip 3.0, token-mean, k3 ("low_var_kl") KL with coefficient 0.01, no importance-sampling correction.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_spatial.algorithms.advantages import ADVANTAGE_ESTIMATORS
from nemo_spatial.algorithms.aggregation import LOSS_AGGREGATIONS
from nemo_spatial.algorithms.kl import KL_ESTIMATORS
from nemo_spatial.algorithms.policy_loss import POLICY_LOSSES
from nemo_spatial.algorithms.registry import Registry
from nemo_spatial.errors import ConfigError


@dataclass
class AlgorithmConfig:
    advantage_estimator: str = "grpo"  # grpo | dr_grpo | rloo
    policy_loss: str = "ppo_clip"
    clip_low: float = 0.2  # ratio clipped below at 1 - clip_low
    clip_high: float = 0.3  # ... and above at 1 + clip_high (asymmetric, "clip-higher")
    dual_clip: float | None = 3.0  # cap of -A * r for A < 0; null disables
    # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm | upstream-microbatch-mean
    loss_aggregation: str = "token-mean"
    upstream_microbatch_size: int = 4  # upstream-microbatch-mean: sequences per upstream micro-batch (per GPU)
    loss_norm_length: int | None = None  # the constant L of seq-mean-token-sum-norm (e.g. the max response length)
    kl_coef: float = 0.01  # 0 disables the KL term (and the reference model's forward pass)
    kl_estimator: str = "low_var_kl"  # k1 | k2 | k3 (= low_var_kl)
    tis: bool = False  # truncated importance sampling between vLLM's and the trainer's log-probs
    tis_cap: float = 2.0  # C in min(p_trainer / p_vllm, C)

    def __post_init__(self) -> None:
        _check_name("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        _check_name("policy_loss", self.policy_loss, POLICY_LOSSES)
        _check_name("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        _check_name("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if not 0 <= self.clip_low < 1:
            raise ConfigError(f"algorithm.clip_low={self.clip_low} must be in [0, 1) (upstream 0.2)")
        if self.clip_high < 0:
            raise ConfigError(f"algorithm.clip_high={self.clip_high} must be >= 0 (upstream 0.3)")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(
                f"algorithm.dual_clip={self.dual_clip} must be > 1 (upstream 3.0), or null to disable the dual clip"
            )
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} must be >= 0 (upstream 0.01; 0 disables the KL)")
        if self.tis_cap < 1:
            raise ConfigError(f"algorithm.tis_cap={self.tis_cap} must be >= 1 (a cap below 1 shrinks every token)")
        if self.upstream_microbatch_size < 1:
            raise ConfigError(f"algorithm.upstream_microbatch_size={self.upstream_microbatch_size} must be >= 1")
        if self.loss_aggregation == "seq-mean-token-sum-norm" and not (self.loss_norm_length or 0) > 0:
            raise ConfigError(
                f"algorithm.loss_aggregation=seq-mean-token-sum-norm needs algorithm.loss_norm_length > 0 "
                f"(the fixed response length), got {self.loss_norm_length}"
            )


def _check_name(key: str, value: str, registry: Registry) -> None:
    if value not in registry:
        raise ConfigError(f"algorithm.{key}={value!r} is not known; use one of: {', '.join(registry.names())}")
