"""The `r1v` reward: the vanilla-GRPO baseline's format + accuracy reward (EasyR1's `r1v.py`).

    format   = 1 if the whole response matches `<think>.*?</think>\\s*<answer>.*?</answer>` (DOTALL), else 0
    accuracy = 1 if mathruler's `grade_answer(pred, gt)` holds, where pred is the first single-line
               `<answer>(.*?)</answer>` (upstream's regex has no DOTALL) or the whole stripped response
               when there is none, and gt is the stripped ground truth (its `<answer>` contents if tagged)
    overall  = 0.5 * accuracy + 0.5 * format

Departures from upstream, behaviour only: the format check runs in linear time instead of a backtracking
regex; answers longer than MAX_GRADED_CHARS are compared as normalised strings only, because
`grade_answer` hands them to sympy, whose parser has no time bound (multiple-choice answers are a few
characters, so no realistic answer is affected); any exception in grading scores 0, as upstream.
"""

from __future__ import annotations

from nemo_spatial.reward.parsing import first_block_one_line
from nemo_spatial.reward.spatialthinker import Components

MAX_GRADED_CHARS = 512
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


def score(response: str, ground_truth: str, problem: str = "") -> Components:
    """The reward of one response; `problem` is unused (kept for a uniform signature)."""
    fmt = format_reward(response)
    accuracy = accuracy_reward(response, ground_truth)
    overall = 0.5 * accuracy + 0.5 * fmt
    return Components(overall=overall, format=fmt, count=0.0, accuracy=accuracy, spatial=0.0)


def format_reward(text: str) -> float:
    """`re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)`, in linear time.

    A full match exists iff the text starts with `<think>`, ends with `</answer>`, and some `</think>` after
    the opening tag is followed, past whitespace only, by an `<answer>` that ends before the final `</answer>`.
    """
    if not text.startswith(THINK_OPEN) or not text.endswith(ANSWER_CLOSE):
        return 0.0
    last_answer_start = len(text) - len(ANSWER_CLOSE) - len(ANSWER_OPEN)
    close = text.find(THINK_CLOSE, len(THINK_OPEN))
    while close >= 0:
        after = close + len(THINK_CLOSE)
        while after < len(text) and text[after].isspace():
            after += 1
        if after <= last_answer_start and text.startswith(ANSWER_OPEN, after):
            return 1.0
        close = text.find(THINK_CLOSE, close + 1)
    return 0.0


def warm_up() -> None:
    """Pay mathruler's one-time costs (importing sympy, its first parse: ~1-2.5 CPU-s) before any sample is timed:
    charged to the first sample they would exceed its CPU budget (reward.sample_time_budget_s) and score it 0."""
    from mathruler.grader import grade_answer

    grade_answer("1", "1")


def accuracy_reward(response: str, ground_truth: str) -> float:
    """mathruler equality of the answer with the ground truth; 0 on any grading error."""
    gt = ground_truth.strip()
    if ANSWER_OPEN in gt and ANSWER_CLOSE in gt:
        tagged = first_block_one_line(gt, "answer")
        gt = tagged.strip() if tagged is not None else gt
    block = first_block_one_line(response, "answer")
    pred = block.strip() if block is not None else response.strip()
    if len(pred) > MAX_GRADED_CHARS or len(gt) > MAX_GRADED_CHARS:
        return float(" ".join(pred.split()).lower() == " ".join(gt.split()).lower())
    from mathruler.grader import grade_answer  # imported late: it pulls in sympy

    try:
        return 1.0 if grade_answer(pred, gt) else 0.0
    except Exception:  # noqa: BLE001 - upstream scores any grading failure as wrong
        return 0.0
