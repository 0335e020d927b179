"""Ranges and gating invariants of the rewards on generated responses (hypothesis)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response
from nemo_spatial.reward.spatialthinker import WEIGHTS

labels = st.sampled_from(["bike", "man", "tree", "Fire_Hydrant", "dog", "x"])
coordinate = st.one_of(st.integers(-50, 700), st.floats(-50, 700, allow_nan=False))
objects = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.builds("{}.{}".format, labels, st.integers(0, 3)),
            "bbox": st.lists(coordinate, min_size=4, max_size=4),
        }
    ),
    max_size=6,
)
relations = st.lists(
    st.fixed_dictionaries(
        {
            "subject": st.sampled_from(["man.1", "bike.1", "x.0"]),
            "predicate": st.sampled_from(["behind", "near"]),
            "object": st.sampled_from(["man.1", "bike.1"]),
        }
    ),
    max_size=3,
)
answers = st.sampled_from(["(A) behind", "(a) BEHIND", "(B) in front of", "A", ""])
scenes = st.one_of(st.builds(lambda o, r: {"objects": o, "relationships": r}, objects, relations), st.text(max_size=30))
tag_orders = st.permutations(["observe", "scene", "think", "answer"])


@settings(max_examples=300, deadline=None)
@given(scenes, answers, tag_orders)
def test_spatialthinker_ranges_and_gating(scene, answer, order):
    text = response(scene, answer, tuple(order))
    r = RewardScorer("spatialthinker", "trigram").score_one(RewardSample(text, GROUND_TRUTH, PROBLEM))
    assert r.error is None
    for value in r.components().values():
        assert 0.0 <= value <= 1.0
    assert r.format in (0.0, 1.0) and r.accuracy in (0.0, 1.0)
    if r.format == 0.0:
        assert r.count == r.accuracy == r.spatial == r.overall == 0.0
    if r.accuracy == 0.0:
        assert r.spatial == 0.0
    weighted = sum(WEIGHTS[name] * getattr(r, name) for name in WEIGHTS)
    assert r.overall == pytest.approx(weighted, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=20))
def test_any_text_scores_in_range(text, ground_truth):
    for preset in ("spatialthinker", "r1v"):
        r = RewardScorer(preset, "trigram").score_one(RewardSample(text, ground_truth, PROBLEM))
        assert r.error is None
        assert all(0.0 <= value <= 1.0 for value in r.components().values())


@settings(max_examples=100, deadline=None)
@given(objects)
def test_spatial_score_is_invariant_to_the_order_of_predicted_objects(objs):
    unique = list({o["id"]: o for o in objs}.values())
    scorer = RewardScorer("spatialthinker", "trigram")
    forward = scorer.score_one(RewardSample(response({"objects": unique}), GROUND_TRUTH, PROBLEM))
    backward = scorer.score_one(RewardSample(response({"objects": unique[::-1]}), GROUND_TRUTH, PROBLEM))
    assert forward.spatial == pytest.approx(backward.spatial, abs=1e-9)


def test_ground_truth_is_parseable():
    assert json.loads(GROUND_TRUTH[len("<scene>") : GROUND_TRUTH.index("</scene>")])
