"""A step's metrics from its optimizer updates: maxima stay maxima, everything else is the mean over updates."""

import pytest

from nemo_spatial.trainer import combine_update_metrics


def test_updates_combine_by_metric_kind():
    updates = [
        {"loss": 0.5, "actor/ratio_max": 1.4, "mismatch/prob_abs_diff_max": 0.1, "grad_norm": 2.0},
        {"loss": 0.3, "actor/ratio_max": 1.1, "mismatch/prob_abs_diff_max": 0.3, "grad_norm": 4.0, "skipped": 1.0},
    ]
    combined = combine_update_metrics(updates)
    assert combined["actor/ratio_max"] == 1.4 and combined["mismatch/prob_abs_diff_max"] == 0.3
    assert combined["loss"] == pytest.approx(0.4) and combined["grad_norm"] == pytest.approx(3.0)
    assert combined["skipped"] == 1.0  # a key only some updates report is averaged over those that do
