"""reward.upstream_exact (issue 15): upstream's value exactly, where the default floors a matched pair's mciou at 0.

The worked values below are computed from the reward spec's formulas (../shared/docs/reward-spec.md, "mciou" and
"Spatial reward") by `_spec_mciou`, written here from the spec's text and independent of boxes.py.
"""

import asyncio
import json
import math

import numpy as np
import pytest

from nemo_spatial.cli import run_main
from nemo_spatial.config import load_config
from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.__main__ import main
from nemo_spatial.reward.client import make_reward_client
from nemo_spatial.reward.examples import BEHIND, BIKE, GROUND_TRUTH, PROBLEM, response, worked_samples
from nemo_spatial.reward.kserve import InferRequest, ProtocolError, Tensor
from nemo_spatial.reward.scoring_pool import ScoringPool
from nemo_spatial.reward.service_model import parse_request

W, H = 640, 480
INVERTED_MAN = {"id": "man.1", "bbox": [640, 165, 0, 166]}  # x2 < x1: the centre leaves the "enclosing" box
SCENE = {"objects": [BIKE, INVERTED_MAN], "relationships": [BEHIND]}
SAMPLE = RewardSample(response(SCENE), GROUND_TRUTH, PROBLEM)


def _spec_mciou(a, b):
    """The spec's mciou, eps = 1e-7, of ground truth `a` and prediction `b` (normalised boxes)."""
    eps = 1e-7
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a, b
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    iou = inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter + eps)
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    c2 = (max(ax2, bx2) - min(ax1, bx1)) ** 2 + (max(ay2, by2) - min(ay1, by1)) ** 2 + eps
    v = 4 / math.pi**2 * (math.atan((bx2 - bx1) / (by2 - by1 + eps)) - math.atan((ax2 - ax1) / (ay2 - ay1 + eps))) ** 2
    alpha = v / ((1 - iou) + v) if (1 - iou) + v != 0 else 0.0
    return (iou - (rho2 / c2 + alpha * v) + 1) / 2


def _norm(box):
    return (box[0] / W, box[1] / H, box[2] / W, box[3] / H)


BIKE_MCIOU = _spec_mciou(_norm(BIKE["bbox"]), _norm(BIKE["bbox"]))
MAN_MCIOU = _spec_mciou(_norm([0, 165, 38, 278]), _norm(INVERTED_MAN["bbox"]))


def test_the_worked_inverted_box_differs_between_the_modes():
    assert abs(BIKE_MCIOU - 0.9999997) < 1e-7 and abs(MAN_MCIOU - -1.873816) < 1e-6
    floored = RewardScorer("spatialthinker", "trigram").score_one(SAMPLE)
    exact = RewardScorer("spatialthinker", "trigram", upstream_exact=True).score_one(SAMPLE)
    # (bike + max(0, man)) / G and (bike + man) / G, G = 2; overall = 0.1 + 0.2 + 0.5 + 0.2 * spatial
    assert floored.spatial == pytest.approx(BIKE_MCIOU / 2, abs=1e-12) == pytest.approx(0.49999986, abs=1e-8)
    assert exact.spatial == pytest.approx((BIKE_MCIOU + MAN_MCIOU) / 2, abs=1e-12)
    assert exact.spatial == pytest.approx(-0.4369082, abs=1e-7)
    assert floored.overall == pytest.approx(0.8 + 0.2 * floored.spatial, abs=1e-12)
    assert exact.overall == pytest.approx(0.8 + 0.2 * exact.spatial, abs=1e-12) == pytest.approx(0.7126184, abs=1e-7)
    assert (exact.format, exact.count, exact.accuracy) == (floored.format, floored.count, floored.accuracy) == (1, 1, 1)


def test_an_inverted_box_ten_widths_out_can_push_upstreams_overall_below_zero():
    far = {"objects": [BIKE, {"id": "man.1", "bbox": [6400, 165, 0, 166]}], "relationships": [BEHIND]}
    sample = RewardSample(response(far), GROUND_TRUTH, PROBLEM)
    exact = RewardScorer("spatialthinker", "trigram", upstream_exact=True).score_one(sample)
    floored = RewardScorer("spatialthinker", "trigram").score_one(sample)
    assert exact.overall < 0 and exact.spatial < -5
    assert 0.0 <= floored.spatial <= 1.0 and floored.overall > 0.8


@pytest.mark.parametrize("name", sorted(worked_samples()))
def test_the_specs_worked_values_are_the_same_in_both_modes(name):
    sample = worked_samples()[name]
    assert RewardScorer("spatialthinker", "trigram", upstream_exact=True).score_one(sample) == RewardScorer(
        "spatialthinker", "trigram"
    ).score_one(sample)


def test_config_key_and_the_local_client(repo_root):
    cfg = load_config(str(repo_root / "conf/base.yaml"), ["reward.similarity=trigram"])
    assert cfg.reward.upstream_exact is False
    exact_cfg = load_config(
        str(repo_root / "conf/base.yaml"), ["reward.similarity=trigram", "reward.upstream_exact=true"]
    )
    default, exact = make_reward_client(cfg), make_reward_client(exact_cfg)
    assert default.score_batch([SAMPLE]).results[0].spatial == pytest.approx(0.49999986, abs=1e-6)
    assert exact.score_batch([SAMPLE]).results[0].spatial == pytest.approx(-0.4369082, abs=1e-6)


def test_score_cli_flag(tmp_path):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"response": SAMPLE.response, "ground_truth": GROUND_TRUTH, "problem": PROBLEM}) + "\n"
    )
    spatial = []
    for flag in ([], ["--upstream-exact"]):
        argv = ["score", "--similarity", "trigram", *flag, "--input", str(source), "--output", str(sink)]
        assert run_main(main, argv) == 0
        spatial.append(json.loads(sink.read_text())["reward"]["spatial"])
    assert spatial == [pytest.approx(0.49999986, abs=1e-7), pytest.approx(-0.4369082, abs=1e-7)]


def _request(exact=None, n=2):
    inputs = {
        name: Tensor(name, "BYTES", (n, 1), [value] * n)
        for name, value in (("sentences", SAMPLE.response), ("ground_truth", GROUND_TRUTH), ("problem", PROBLEM))
    }
    if exact is not None:
        inputs["upstream_exact"] = Tensor("upstream_exact", "BOOL", (len(exact),), np.array(exact, dtype=np.bool_))
    return InferRequest("id", inputs, None, False)


def test_service_request_input_defaults_and_per_sample_runs():
    assert parse_request(_request(), "spatialthinker", 9).segments == [("spatialthinker", False, 0, 2)]
    assert parse_request(_request(), "spatialthinker", 9, True).segments == [("spatialthinker", True, 0, 2)]
    assert parse_request(_request([True]), "spatialthinker", 9).segments == [("spatialthinker", True, 0, 2)]
    runs = parse_request(_request([True, False]), "r1v", 9).segments
    assert runs == [("r1v", True, 0, 1), ("r1v", False, 1, 2)]
    with pytest.raises(ProtocolError, match="'upstream_exact' has 3 values"):
        parse_request(_request([True, False, True]), "spatialthinker", 9)
    wrong = _request()
    wrong.inputs["upstream_exact"] = Tensor("upstream_exact", "BYTES", (1,), ["true"])
    with pytest.raises(ProtocolError, match="must be BOOL"):
        parse_request(wrong, "spatialthinker", 9)


def test_scoring_processes_score_each_run_in_its_mode():
    async def scenario():
        pool = ScoringPool(workers=1, chunk_size=4, similarity="trigram")
        await pool.start()
        try:
            return await pool.score(parse_request(_request([False, True]), "spatialthinker", 9))
        finally:
            await pool.close()

    scores = asyncio.run(scenario())
    assert scores.values[4].tolist() == pytest.approx([0.49999986, -0.4369082], abs=1e-6)  # the spatial column
