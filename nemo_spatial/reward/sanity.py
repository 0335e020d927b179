"""The `letter_a` reward: a sanity reward that a randomly initialised policy learns in a few GRPO steps.

    overall = accuracy = (characters of the response equal to "A") / (non-whitespace characters), 0 if none
    format = count = spatial = 0

It is not a task reward. It exists to prove a training stack end to end: from random weights the policy
emits "A" with probability ~1/vocab per token, so the mean starts near 0; it rises towards 1 only if the
advantages have the right sign, the update moves the policy, and the new weights reach the generator
(a stale generator keeps sampling from the initial policy). The ground truth and prompt are ignored.
"""

from __future__ import annotations

from nemo_spatial.reward.spatialthinker import Components

TARGET = "A"


def score(response: str, ground_truth: str = "", problem: str = "") -> Components:
    visible = sum(1 for char in response if not char.isspace())
    share = response.count(TARGET) / visible if visible else 0.0
    return Components(overall=share, format=0.0, count=0.0, accuracy=share, spatial=0.0)
