"""Responses a policy under RL may produce: scoring never raises and stays bounded.

The time limits here are loose ceilings (about 10x what these take on 2 cores) that catch quadratic or
exponential blow-ups, which would take minutes; the measured costs are in benchmarks/reward_throughput.py.

Bounds. Every step is linear in the text (parsing.py; r1v's format check) but the box matching, which is
capped: only the first 256 predicted objects are matched (spatialthinker.MAX_MATCHED_OBJECTS; the count
reward still counts all), and a ground truth with more than 256 objects is a per-sample error, so a scene
costs at most 256 x 256 box pairs and label comparisons (test_bounds.py). Each sample also has a CPU-time
budget (reward.sample_time_budget_s, 2 s): past it, reward 0 and a ScoringTimeout error. The limits on the
input are the server's (reward_service.server.max_request_mb, 64 MB a request, and max_batch_size) or the
policy's generation length. Also capped: JSON nesting past Python's recursion limit (about 1,500 levels)
makes the scene invalid; r1v grades answers over 512 characters (r1v.MAX_GRADED_CHARS) by string equality,
not sympy; labels over 64 characters (similarity.MAX_CACHED_LABEL_CHARS) are not cached, so the label caches
stay under about 60 MB a process. Measured on the cases below (2 shared cores, one response, caches warm,
CPU time, with the cap):
- spatialthinker: worst 0.058 s (3,000 boxes with distinct 300-letter labels, 256 of them matched; 0.32 s
  before the cap); 20,000 boxes peak 11.5 MB traced. The costliest scene the cap allows (10,000 predicted
  and 256 ground-truth objects, all with distinct 300-letter labels) would take 8.5 s and is cut at 2 s by
  the budget (test_bounds.py).
- r1v: worst 0.055 s (a megabyte of tags one per line); peak extra memory 7.3 MB.
Parsing grows linearly from there: about 0.3 s and 20 MB per megabyte of scene JSON.
"""

import json
import resource
import time

import pytest

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response

MB = 1_000_000


def _boxes(n, name=lambda i: "box"):
    return {
        "objects": [{"id": f"{name(i)}.{i}", "bbox": [i % 600, i % 400, i % 600 + 20, i % 400 + 30]} for i in range(n)]
    }


def _long_name(i):
    """A distinct 300-letter name per object: past the similarity's cached length, so computed every time."""
    return "".join(chr(97 + i // 26**k % 26) for k in range(5)) * 60


ADVERSARIAL = {
    "a megabyte of filler inside think": response().replace("<think>", "<think>" + "a" * MB),
    "a megabyte of unclosed answer tags": "<answer>" * (MB // 8),
    # An opening tag per line and one closing tag at the end: a fresh search per opening tag is quadratic.
    "a megabyte of answer tags one per line": "<answer>\n" * (MB // 9) + "</answer>",
    "a megabyte of think closings one per line": "<think>" + "</think>\n" * (MB // 9) + "</answer>",
    "a megabyte of nested think tags": "<think>" * (MB // 14) + "</think>" * (MB // 14),
    "a megabyte of scene openings": "<observe></observe><think></think><answer>(A) behind</answer>"
    + "<scene>{" * (MB // 8),
    "deeply nested JSON": response('{"objects": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "thousands of boxes": response(_boxes(5000)),
    "thousands of boxes with distinct 300-letter labels": response(_boxes(3000, _long_name)),
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
