"""Responses a policy under RL may produce: scoring never raises and stays bounded.

The time limits here are loose ceilings (about 10x what these take on 2 cores) that catch quadratic or
exponential blow-ups, which would take minutes; the measured costs are in benchmarks/reward_throughput.py.
"""

import json
import resource
import time

import pytest

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response

MB = 1_000_000


def _boxes(n):
    return {"objects": [{"id": f"box.{i}", "bbox": [i % 600, i % 400, i % 600 + 20, i % 400 + 30]} for i in range(n)]}


ADVERSARIAL = {
    "a megabyte of filler inside think": response().replace("<think>", "<think>" + "a" * MB),
    "a megabyte of unclosed answer tags": "<answer>" * (MB // 8),
    "a megabyte of nested think tags": "<think>" * (MB // 14) + "</think>" * (MB // 14),
    "a megabyte of scene openings": "<observe></observe><think></think><answer>(A) behind</answer>"
    + "<scene>{" * (MB // 8),
    "deeply nested JSON": response('{"objects": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "thousands of boxes": response(_boxes(5000)),
    "thousands of boxes with one relation each": response(
        {
            **_boxes(3000),
            "relationships": [{"subject": f"box.{i}", "predicate": "near", "object": "box.0"} for i in range(3000)],
        }
    ),
    "NaN and infinite boxes": response(
        '{"objects": [{"id": "bike.1", "bbox": [NaN, 0, Infinity, -Infinity]},'
        ' {"id": "man.1", "bbox": [1e308, 1e308, -1e308, 1e999]}]}'
    ),
    "huge integers": response('{"objects": [{"id": "bike.1", "bbox": [' + "9" * 4000 + ", 0, 1, 1]}]}"),
    "non-ASCII labels and text": response(
        {"objects": [{"id": "自転車.1", "bbox": [0, 0, 1, 1]}, {"id": "bike.١", "bbox": [0, 272, 310, 451]}]}
    ),
    "tags inside tags": response(answer="<answer>(A) behind</answer>"),
    "scene inside think": response().replace("<think>", "<think><scene>{}</scene>"),
    "zero-area and inverted boxes": response(
        {"objects": [{"id": "bike.1", "bbox": [310, 451, 0, 272]}, {"id": "man.1", "bbox": [5, 5, 5, 5]}]}
    ),
    "surrogates and control characters": "<observe>\ud800\x00</observe>" + response(),
    "empty response": "",
}


@pytest.mark.parametrize("preset", ["spatialthinker", "r1v"])
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_response_is_scored_in_bounded_time(name, preset):
    scorer = RewardScorer(preset, "trigram")
    start = time.perf_counter()
    result = scorer.score_one(RewardSample(ADVERSARIAL[name], GROUND_TRUTH, PROBLEM))
    elapsed = time.perf_counter() - start
    assert result.error is None
    for value in result.components().values():
        assert 0.0 <= value <= 1.0
    assert elapsed < 5.0, f"{name}: {elapsed:.2f} s"


def test_many_box_response_memory_stays_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    RewardScorer("spatialthinker", "trigram").score_one(RewardSample(response(_boxes(20_000)), GROUND_TRUTH, PROBLEM))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024  # P x G float matrices: 20k x 2 is tiny; the JSON dominates


def test_invalid_boxes_fail_format_not_the_batch():
    bad = response('{"objects": [{"id": "bike.1", "bbox": [0, 0, 1, "x"]}]}')
    result = RewardScorer("spatialthinker", "trigram").score_one(RewardSample(bad, GROUND_TRUTH, PROBLEM))
    assert result.error is None and result.format == 0.0 and result.overall == 0.0


def test_ground_truth_json_is_round_trippable():
    assert json.loads(GROUND_TRUTH.split("<scene>")[1].split("</scene>")[0])["objects"][0]["id"] == "bike.1"


def test_an_inverted_box_cannot_push_spatial_below_zero_or_wipe_out_good_boxes():
    scene = {
        "objects": [{"id": "bike.1", "bbox": [0, 272, 310, 451]}, {"id": "man.1", "bbox": [640, 165, 0, 166]}],
        "relationships": [{"subject": "man.1", "predicate": "behind", "object": "bike.1"}],
    }
    result = RewardScorer("spatialthinker", "trigram").score_one(RewardSample(response(scene), GROUND_TRUTH, PROBLEM))
    assert result.spatial == pytest.approx(0.9999997 / 2, abs=1e-6)  # bike exact, man clamped to 0
