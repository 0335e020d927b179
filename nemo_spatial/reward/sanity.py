"""The `letter_a` reward: a sanity reward that a randomly initialised policy learns in a few GRPO steps.

    overall = accuracy = min(1, (number of "A" characters in the response) / 8)
    format = count = spatial = 0

It is not a task reward. It exists to prove a training stack end to end: from random weights a 12-token
response holds about one "A" (many tokens contain one), so the mean starts near 0.1 (0.13 measured); it
rises to 1 only if the advantages have the right sign, the update moves the policy, and the new weights
reach the generator (a stale generator keeps sampling from the initial policy). A count, not a share of
the characters: with a share, the policy locked onto a two-character token such as "AW" (0.5) as its
entropy collapsed; any token holding an "A" moves a count up. The ground truth and prompt are ignored.
"""

from __future__ import annotations

from nemo_spatial.reward.spatialthinker import Components

TARGET = "A"
FULL_COUNT = 8


def score(response: str, ground_truth: str = "", problem: str = "") -> Components:
    value = min(1.0, response.count(TARGET) / FULL_COUNT)
    return Components(overall=value, format=0.0, count=0.0, accuracy=value, spatial=0.0)
