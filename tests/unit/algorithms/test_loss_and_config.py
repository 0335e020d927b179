"""actor_loss (policy + KL + TIS) and AlgorithmConfig (defaults = upstream, validation, root config)."""

import math

import pytest
import torch

from nemo_spatial.algorithms import AlgorithmConfig, LossScale, actor_loss, kl_loss, ppo_clip_loss
from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.parallel.collectives import reduction_of


def _micro_batch():
    gen = torch.Generator().manual_seed(5)
    old = -torch.rand(3, 5, generator=gen) * 3
    return {
        "log_probs": (old + 0.3 * torch.randn(3, 5, generator=gen)).requires_grad_(True),
        "old_log_probs": old,
        "advantages": torch.randn(3, generator=gen),
        "response_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]),
        "ref_log_probs": old + 0.2 * torch.randn(3, 5, generator=gen),
        "rollout_log_probs": old + 0.1 * torch.randn(3, 5, generator=gen),
    }


def test_actor_loss_is_policy_plus_coef_times_kl():
    cfg = AlgorithmConfig()
    batch = _micro_batch()
    out = actor_loss(cfg, **batch)
    pg = ppo_clip_loss(batch["log_probs"], batch["old_log_probs"], batch["advantages"], batch["response_mask"])
    kl = kl_loss(batch["log_probs"], batch["ref_log_probs"], batch["response_mask"], "low_var_kl")
    assert out.loss.item() == pytest.approx(pg.loss.item() + 0.01 * kl.loss.item(), rel=1e-6)
    metrics = out.metrics()
    assert {"actor/loss", "actor/pg_loss", "actor/kl_loss", "actor/clip_frac_high", "mismatch/kl_k3"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_metric_reduction_rebuilds_the_global_batch_from_micro_batches():
    """Each summed or maxed metric of two micro-batches combines to exactly the whole batch's value."""
    batch = _micro_batch()
    scale = LossScale.for_global_batch([batch["response_mask"]])
    whole = actor_loss(AlgorithmConfig(), **batch, scale=scale).metrics()
    parts = [
        actor_loss(
            AlgorithmConfig(), **{k: v[rows].detach() if k != "log_probs" else v[rows] for k, v in batch.items()},
            scale=scale,
        ).metrics()
        for rows in (slice(0, 1), slice(1, 3))
    ]  # fmt: skip
    reductions = {key: reduction_of(value).value for key, value in whole.items()}
    assert reductions["actor/loss"] == reductions["actor/pg_loss"] == reductions["actor/kl_loss"] == "sum"
    assert reductions["actor/ratio_max"] == reductions["mismatch/prob_abs_diff_max"] == "max"
    assert reductions["actor/clip_frac_high"] == "mean"
    for key, reduction in reductions.items():
        if reduction == "sum":
            assert parts[0][key] + parts[1][key] == pytest.approx(whole[key], rel=1e-5, abs=1e-7), key
        elif reduction == "max":
            assert max(parts[0][key], parts[1][key]) == pytest.approx(whole[key], rel=1e-6), key


def test_tis_changes_the_loss_only_when_enabled():
    batch = _micro_batch()
    off = actor_loss(AlgorithmConfig(kl_coef=0.0), **batch)
    on = actor_loss(AlgorithmConfig(kl_coef=0.0, tis=True), **batch)
    assert off.kl is None and off.mismatch is not None  # the mismatch is measured either way
    assert on.loss.item() != pytest.approx(off.loss.item())


def test_missing_inputs_are_named():
    batch = _micro_batch()
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_log_probs"):
        actor_loss(AlgorithmConfig(), **{**batch, "ref_log_probs": None})
    with pytest.raises(ValueError, match="tis=true needs rollout_log_probs"):
        actor_loss(AlgorithmConfig(tis=True), **{**batch, "rollout_log_probs": None})


def test_norm_length_comes_from_the_config():
    batch = _micro_batch()
    cfg = AlgorithmConfig(loss_aggregation="seq-mean-token-sum-norm", loss_norm_length=5, kl_coef=0.0)
    a = actor_loss(cfg, **batch).loss.item()
    b = actor_loss(cfg, **batch, scale=LossScale(norm_length=5)).loss.item()
    assert a == b


def test_defaults_are_upstream_and_base_yaml_matches(repo_root):
    cfg = AlgorithmConfig()
    assert (cfg.advantage_estimator, cfg.clip_low, cfg.clip_high, cfg.dual_clip) == ("grpo", 0.2, 0.3, 3.0)
    assert (cfg.loss_aggregation, cfg.kl_coef, cfg.kl_estimator, cfg.tis) == ("token-mean", 0.01, "low_var_kl", False)
    assert load_config(repo_root / "conf/base.yaml").algorithm == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.advantage_estimator=ppo", "algorithm.advantage_estimator='ppo' is not known; use one of: grpo"),
        ("algorithm.kl_estimator=k4", "use one of: k1, kl, k2, mse, k3, low_var_kl"),
        ("algorithm.loss_aggregation=mean", "algorithm.loss_aggregation='mean' is not known; use one of: token-mean"),
        ("algorithm.clip_low=1.0", r"algorithm.clip_low=1.0 must be in \[0, 1\)"),
        ("algorithm.clip_high=-0.1", "algorithm.clip_high=-0.1 must be >= 0"),
        ("algorithm.dual_clip=1.0", "algorithm.dual_clip=1.0 must be > 1"),
        ("algorithm.kl_coef=-0.01", "algorithm.kl_coef=-0.01 must be >= 0"),
        ("algorithm.tis_cap=0.5", "algorithm.tis_cap=0.5 must be >= 1"),
        ("algorithm.loss_aggregation=seq-mean-token-sum-norm", "needs algorithm.loss_norm_length > 0"),
        ("algorithm.clip_hi=0.3", "did you mean 'algorithm.clip_high'"),
    ],
)
def test_invalid_values_name_the_key(repo_root, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(repo_root / "conf/base.yaml", [override])


def test_overrides_and_null_dual_clip(repo_root):
    cfg = load_config(repo_root / "conf/base.yaml", ["algorithm.dual_clip=null", "algorithm.advantage_estimator=rloo"])
    assert cfg.algorithm.dual_clip is None and cfg.algorithm.advantage_estimator == "rloo"
