"""The vanilla-GRPO baseline reward."""

import pytest

from nemo_spatial.reward import RewardSample, RewardScorer


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected"),
    [
        ("<think>look</think>\n<answer>(B) behind</answer>", "(B) behind", (1.0, 1.0, 1.0)),
        ("<think>look</think> <answer>B</answer>", "(B) behind", (1.0, 0.0, 0.5)),
        ("preamble <think>look</think><answer>(B) behind</answer>", "(B) behind", (0.0, 1.0, 0.5)),
        ("<think>x</think><answer>1/2</answer>", "0.5", (1.0, 1.0, 1.0)),  # mathruler's equality
        ("(B) behind", "(B) behind", (0.0, 1.0, 0.5)),  # no answer tag: the whole response is graded
        ("<think>x</think><answer>\n(B) behind</answer>", "(B) behind", (1.0, 0.0, 0.5)),  # one-line regex
    ],
)
def test_r1v(response, ground_truth, expected):
    result = RewardScorer("r1v").score_one(RewardSample(response, ground_truth, ""))
    assert (result.format, result.accuracy, result.overall) == expected
    assert result.count == result.spatial == 0.0


def test_very_long_answers_are_compared_as_strings_not_parsed():
    long_answer = "1+" * 10_000 + "1"
    result = RewardScorer("r1v").score_one(RewardSample(f"<think>x</think><answer>{long_answer}</answer>", "2", ""))
    assert result.error is None and result.accuracy == 0.0


def test_letter_a_sanity_reward():
    scorer = RewardScorer("letter_a")
    assert scorer.score_one(RewardSample("AAAAAAAAAA", "", "")).overall == 1.0  # capped at 8
    assert scorer.score_one(RewardSample("A b\nAW c", "", "")).overall == 0.25
    assert scorer.score_one(RewardSample("   ", "", "")).overall == 0.0
