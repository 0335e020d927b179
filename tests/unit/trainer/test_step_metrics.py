"""A step's metrics: updates combine by each metric's declared reduction (maxima stay maxima, the rest is
averaged; a name ending in _max is no maximum unless declared one), and the reward's
breakdown has every component's mean and distribution."""

import pytest

from nemo_spatial.parallel.collectives import Metric, Reduction
from nemo_spatial.reward import BatchResult, RewardResult
from nemo_spatial.trainer import combine_update_metrics, reward_metrics


def test_updates_combine_by_metric_kind():
    peak = Reduction.MAX
    updates = [
        {"loss": 0.5, "actor/ratio_max": Metric(1.4, peak), "mismatch/prob_abs_diff_max": Metric(0.1, peak),
         "grad_norm": 2.0, "width_max": 1.0},
        {"loss": 0.3, "actor/ratio_max": Metric(1.1, peak), "mismatch/prob_abs_diff_max": Metric(0.3, peak),
         "grad_norm": 4.0, "skipped": 1.0, "width_max": 3.0},
    ]  # fmt: skip
    combined = combine_update_metrics(updates)
    assert combined["actor/ratio_max"] == 1.4 and combined["mismatch/prob_abs_diff_max"] == 0.3
    assert combined["width_max"] == 2.0  # declared by nobody: a mean, whatever its name
    assert combined["loss"] == pytest.approx(0.4) and combined["grad_norm"] == pytest.approx(3.0)
    assert combined["skipped"] == 1.0  # a key only some updates report is averaged over those that do


def test_reward_metrics_give_every_components_distribution():
    results = [RewardResult(0.1 * i, 1.0, 0.5 * (i % 2), float(i > 2), 0.2 * i) for i in range(5)]
    metrics = reward_metrics(BatchResult(results, n_errors=1), "reward")
    assert metrics["reward/errors"] == 1.0
    assert metrics["reward/overall/mean"] == pytest.approx(0.2) and metrics["reward/overall/p50"] == pytest.approx(0.2)
    assert metrics["reward/spatial/max"] == pytest.approx(0.8) and metrics["reward/spatial/min"] == 0.0
    assert metrics["reward/format/std"] == 0.0 and metrics["reward/accuracy/p90"] == pytest.approx(1.0)
    assert {f"reward/count/{stat}" for stat in ("mean", "p10", "p50", "p90", "std", "min", "max")} <= set(metrics)
