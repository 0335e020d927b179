"""The SFT target text: exactly the documented template, a perfect response for the reward, clear errors."""

from __future__ import annotations

import json

import pytest

from nemo_spatial.data.sft_target import TargetError, sft_target
from nemo_spatial.data.synth import main, make_row
from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM

SCENE = (
    '{"objects": [{"id": "bike.1", "bbox": [0, 272, 310, 451]}, {"id": "man.1", "bbox": [0, 165, 38, 278]}], '
    '"relationships": [{"subject": "man.1", "predicate": "behind", "object": "bike.1"}]}'
)


def test_the_target_text_exactly():
    truth = f"<scene>{SCENE}</scene>\n<answer>(A) behind</answer>"
    assert sft_target(truth) == (
        "<observe>The question is about bike and man.</observe>\n"
        f"<scene>{SCENE}</scene>\n"
        "<think>man.1 behind bike.1. So the answer is (A) behind.</think>\n"
        "<answer>(A) behind</answer>"
    )
    assert sft_target(truth, "answer_only") == truth
    no_relations = '{"objects": [{"id": "traffic_light.1", "bbox": [1, 2, 3, 4]}], "relationships": []}'
    assert sft_target(f"<scene>{no_relations}</scene><answer> (B) 1 </answer>") == (
        "<observe>The question is about traffic light.</observe>\n"
        f"<scene>{no_relations}</scene>\n"
        "<think>Reading the scene graph. So the answer is (B) 1.</think>\n"
        "<answer>(B) 1</answer>"
    )


def test_it_is_a_perfect_response():
    scorer = RewardScorer("spatialthinker", similarity="trigram")
    rows = [make_row(0, "train", i) for i in range(9)]  # one of each category
    samples = [RewardSample(sft_target(r["answer_option_text"]), r["answer_option_text"], r["problem"]) for r in rows]
    samples.append(RewardSample(sft_target(GROUND_TRUTH), GROUND_TRUTH, PROBLEM))
    for result in scorer.score_batch(samples).results:
        assert (result.format, result.count, result.accuracy) == (1.0, 1.0, 1.0)
        assert result.spatial == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "truth",
    [
        "(A) behind",
        "<scene>{}</scene>",
        "<scene>[1, 2]</scene><answer>A</answer>",
        "<scene>{</scene><answer>A</answer>",
    ],
)
def test_a_ground_truth_that_is_not_a_scene_graph_is_a_clear_error(truth):
    with pytest.raises(TargetError, match="ground truth"):
        sft_target(truth)
    with pytest.raises(ValueError, match="sft.target"):
        sft_target(f"<scene>{SCENE}</scene><answer>A</answer>", "free")


def test_synth_writes_the_targets(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n", "3", "--n-val", "2", "--sft-targets"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "train-sft.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and len((tmp_path / "val-sft.jsonl").read_text().splitlines()) == 2
    row = make_row(0, "train", 1)
    assert lines[1] == {
        "image_id": row["image_id"],
        "problem": row["problem"],
        "ground_truth": row["answer_option_text"],
        "target": sft_target(row["answer_option_text"]),
    }
