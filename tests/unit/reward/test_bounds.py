"""One sample's cost is bounded by construction (issue 13): a cap on matched boxes and a per-sample CPU budget.

Before: 10,000 predicted x 2,000 ground-truth boxes (a 1 MB line) took 51 s and 2.1 GB, and two such samples held
both of the service's scoring processes while valid requests timed out.
"""

import asyncio
import json
import resource
import time

import pytest

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import BEHIND, BIKE, GROUND_TRUTH, MAN, PROBLEM, response, worked_samples
from nemo_spatial.reward.parsing import MAX_SCENE_CHARS
from nemo_spatial.reward.scoring_pool import ScoringPool
from nemo_spatial.reward.service_model import ScoringRequest
from nemo_spatial.reward.spatialthinker import MAX_MATCHED_OBJECTS

ANSWER = "(A) behind"


def _objects(n, name=lambda i: "box"):
    return [{"id": f"{name(i)}.{i}", "bbox": [i % 600, i % 400, i % 600 + 20, i % 400 + 30]} for i in range(n)]


def _ground_truth(objects):
    scene = json.dumps({"objects": objects, "relationships": []})
    return f"<scene>{scene}</scene><answer>{ANSWER}</answer>"


def _long_name(i):
    return "".join(chr(97 + i // 26**k % 26) for k in range(5)) * 60  # distinct, past the label cache's length


# A sample that stays expensive under the caps (650 KB): 2,000 predicted and 256 ground-truth objects, all with distinct
# 300-letter labels, so each of the 65,536 matched pairs computes a label similarity (8.5 CPU-s unbudgeted, measured).
EXPENSIVE = RewardSample(
    response({"objects": _objects(2_000, _long_name)}),
    _ground_truth(_objects(MAX_MATCHED_OBJECTS, lambda i: _long_name(i + 7))),
    PROBLEM,
)


def test_ten_thousand_by_two_thousand_boxes_is_refused_fast_and_small():
    sample = RewardSample(response({"objects": _objects(10_000)}), _ground_truth(_objects(2_000)), PROBLEM)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.thread_time()
    result = RewardScorer("spatialthinker", "trigram").score_one(sample)
    assert time.thread_time() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
    assert result.overall == 0.0 and "2000 objects, over the reward's cap of 256" in result.error


def test_only_the_first_256_predicted_objects_are_matched():
    far = [{"id": f"tree.{i}", "bbox": [600, 440, 640, 480]} for i in range(MAX_MATCHED_OBJECTS)]
    scorer = RewardScorer("spatialthinker", "trigram")

    def spatial_of(objects):
        scene = {"objects": objects, "relationships": [BEHIND]}
        return scorer.score_one(RewardSample(response(scene), GROUND_TRUTH, PROBLEM))

    early, late = spatial_of([BIKE, MAN, *far]), spatial_of([*far, BIKE, MAN])
    assert early.spatial == pytest.approx(0.9999981, abs=1e-6)  # the exact boxes are among the first 256
    assert late.spatial < 0.3 and late.error is None  # they are past the cap: only the far trees are matched


@pytest.mark.parametrize("preset", ["spatialthinker", "r1v", "letter_a"])
def test_the_budget_applies_to_every_preset(preset):
    result = RewardScorer(preset, "trigram", time_budget_s=1e-9).score_one(worked_samples()["exact ground-truth scene"])
    assert result.overall == 0.0 and result.error.startswith("ScoringTimeout: ")
    assert "budget 1e-09 s a sample" in result.error


def test_an_expensive_sample_is_cut_off_at_its_budget():
    start = time.thread_time()
    result = RewardScorer("spatialthinker", "trigram", time_budget_s=0.3).score_one(EXPENSIVE)
    used = time.thread_time() - start
    assert result.error.startswith("ScoringTimeout: the sample's scoring time budget ran out during the label")
    assert result.overall == 0.0 and used < 1.5, used


def test_the_service_answers_a_valid_request_while_expensive_samples_are_scored():
    valid = worked_samples()["exact ground-truth scene"]

    def request(samples):
        columns = [[getattr(s, f) for s in samples] for f in ("response", "ground_truth", "problem")]
        return ScoringRequest(*columns, segments=[("spatialthinker", False, 0, len(samples))], shape=(len(samples),))

    async def scenario():
        pool = ScoringPool(workers=2, chunk_size=1, similarity="trigram", time_budget_s=0.2)
        await pool.start()
        try:
            hostile = asyncio.ensure_future(pool.score(request([EXPENSIVE] * 8)))
            await asyncio.sleep(0.2)
            start = time.monotonic()
            answer = await asyncio.wait_for(pool.score(request([valid])), timeout=30)
            waited = time.monotonic() - start
            hostile_still_running = not hostile.done()  # the valid request did not wait for all 8
            return answer, waited, hostile_still_running, await asyncio.wait_for(hostile, timeout=120)
        finally:
            await pool.close()

    answer, waited, hostile_still_running, hostile = asyncio.run(scenario())
    assert answer.errors == [""] and round(float(answer.values[0][0]), 5) == 1.0
    assert all(error.startswith("ScoringTimeout") for error in hostile.errors) and len(hostile.errors) == 8
    assert hostile_still_running  # pieces are taken a request at a time, in turn
    assert waited < 20, waited  # behind the jobs already handed out: two budgets of CPU per process


def test_a_scene_over_a_million_characters_is_not_parsed():
    padding = " " * MAX_SCENE_CHARS  # valid JSON whitespace: upstream would parse it and score the scene
    scene = json.dumps({"objects": [BIKE, MAN], "relationships": [BEHIND]})
    big = response().replace(scene, padding + scene) if scene in response() else None
    assert big is not None
    scorer = RewardScorer("spatialthinker", "trigram")
    assert scorer.score_one(RewardSample(big, GROUND_TRUTH, PROBLEM)).format == 0.0
    big_truth = GROUND_TRUTH.replace("<scene>", "<scene>" + padding)
    assert "over the reward's cap of 1000000" in scorer.score_one(RewardSample(response(), big_truth, PROBLEM)).error
