"""The viewer's matching is the reward's: match_objects' pairs add up to the spatial term's object score."""

import pytest

from nemo_spatial.report.scenes import scene_problems, view_scene
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, WORKED_RESPONSES, response
from nemo_spatial.reward.parsing import parse_scene
from nemo_spatial.reward.similarity import TrigramSimilarity
from nemo_spatial.reward.spatialthinker import object_score, parse_ground_truth, spatial_reward


@pytest.mark.parametrize("name", sorted(WORKED_RESPONSES))
def test_pairs_sum_to_the_object_score(name):
    text, gt, sim = WORKED_RESPONSES[name], parse_ground_truth(GROUND_TRUTH), TrigramSimilarity()
    view = view_scene(text, gt, (640, 480), sim)
    if not view.objects:
        return
    expected = object_score(gt, view.objects, 640, 480, sim)
    assert sum(score for _, _, score in view.matches) / len(gt.boxes) == pytest.approx(expected, abs=0, rel=0)
    if not view.problems:  # a well-formed scene: the reward's spatial term is that score
        assert spatial_reward(parse_scene(text), gt, 640, 480, sim) == expected


def test_swapped_labels_are_paired_by_label_not_by_box():
    gt = parse_ground_truth(GROUND_TRUTH)
    view = view_scene(WORKED_RESPONSES["labels of the two boxes swapped"], gt, (640, 480), TrigramSimilarity())
    # The label term (weight 2) outweighs the box term (weight 1): bike.1 pairs with the bike, far from its box.
    assert [(g, p) for g, p, _ in sorted(view.matches)] == [(0, 0), (1, 1)]
    assert all(score < 0.5 for _, _, score in view.matches)


def test_problems_say_why_a_scene_fails():
    assert scene_problems(response()) == []
    assert scene_problems(WORKED_RESPONSES["no <observe> block"]) == ["no <observe>...</observe> block"]
    assert scene_problems(response("[1, 2]")) == ["the scene is a JSON list, not an object"]
    dup = response({"objects": [{"id": "a.1", "bbox": [0, 0, 1, 1]}, {"id": "a.1", "bbox": [0, 0, 2, 2]}]})
    assert scene_problems(dup) == ["duplicate object ids: a.1"]
    assert "<answer> appears 2 times" in scene_problems(response() + "<answer>x</answer>")
    assert PROBLEM  # the prompt these responses answer
