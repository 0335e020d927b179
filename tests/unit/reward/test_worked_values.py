"""The worked values of ../shared/docs/reward-spec.md, row by row."""

import pytest

from nemo_spatial.reward import RewardScorer
from nemo_spatial.reward.examples import worked_samples

# (format, count, accuracy, spatial, overall) as the spec's table gives them, with its precision.
EXPECTED = {
    "exact ground-truth scene": (1, 1, 1, 1.0000, 1.0000),
    "bike shifted (+20,+10) px, man (+5,+5) px": (1, 1, 1, 0.8736, 0.9747),
    "perfect scene, answer (B) in front of": (1, 1, 0, 0, 0.3000),
    "answer A only": (1, 1, 0, 0, 0.3000),
    "answer '  (a) BEHIND '": (1, 1, 1, 1.0, 1.0000),
    "no <observe> block": (0, 0, 0, 0, 0),
    "two extra objects and three relationships": (1, 0, 1, 1.0, 0.8000),
    "only man.1, no relationships": (1, 0.35, 1, 0.5, 0.7700),
    # The spec does not say which boxes; examples.py translates the ground-truth scene by (+390, +17) px,
    # the smallest translation that reproduces the row. test_boxes.py checks the geometry independently.
    "correct labels, non-overlapping boxes": (1, 1, 1, 0.2527, 0.8505),
    "empty scene": (1, 0, 1, 0, 0.6000),
    "tags in another order": (1, 1, 1, 1, 1.0000),
    "labels of the two boxes swapped": (1, 1, 1, 0.3776, 0.8755),
}


@pytest.mark.parametrize("similarity", ["trigram", "spacy-like"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_worked_value(name, similarity, spacy_like_similarity):
    backend = spacy_like_similarity if similarity == "spacy-like" else "trigram"
    result = RewardScorer("spatialthinker", backend).score_one(worked_samples()[name])
    fmt, count, accuracy, spatial, overall = EXPECTED[name]
    assert result.error is None
    assert (result.format, result.accuracy) == (fmt, accuracy)
    assert result.count == pytest.approx(count, abs=1e-12)
    assert result.spatial == pytest.approx(spatial, abs=5e-5)
    assert result.overall == pytest.approx(overall, abs=5e-5)


def test_exact_scene_scores_one_to_six_places_but_not_exactly():
    result = RewardScorer("spatialthinker", "trigram").score_one(worked_samples()["exact ground-truth scene"])
    # mciou of an identical box is (area / (area + 1e-7) + 1) / 2: bike 0.9999997, man 0.9999964.
    assert result.spatial == pytest.approx(0.9999981, abs=1e-7) and result.spatial < 1.0
    assert round(result.overall, 6) == 1.0
