"""The batch API: every component per sample, per-sample errors counted and logged, the batch goes on."""

import logging

import pytest

from nemo_spatial.reward import COMPONENTS, RewardSample, RewardScorer
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response


def test_bad_samples_get_errors_and_the_rest_is_scored(caplog):
    samples = [
        RewardSample(response(), GROUND_TRUTH, PROBLEM),
        RewardSample(response(), GROUND_TRUTH, "a prompt without the size"),
        RewardSample(response(), '<scene>{"objects": [{"id": "bike.1"}]}</scene><answer>(A) behind</answer>', PROBLEM),
        RewardSample(None, GROUND_TRUTH, PROBLEM),  # type: ignore[arg-type]
        RewardSample(response(), GROUND_TRUTH, PROBLEM),
    ]
    with caplog.at_level(logging.WARNING):
        batch = RewardScorer("spatialthinker", "trigram").score_batch(samples)
    assert [r.error is None for r in batch.results] == [True, False, False, False, True]
    assert batch.n_errors == 3
    assert "Image size" in batch.results[1].error
    assert "needs 'id' and 'bbox'" in batch.results[2].error
    assert "response must be a string" in batch.results[3].error
    for bad in batch.results[1:4]:
        assert bad.components() == dict.fromkeys(COMPONENTS, 0.0)
    assert batch.results[0].overall == pytest.approx(1.0, abs=1e-6) == batch.results[4].overall
    assert "3 of 5 samples could not be scored" in caplog.text
    assert batch.column("format") == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="spatialthinker, r1v, letter_a"):
        RewardScorer("spatial")
