"""Reading the answer out of a response and scoring it: strict (default) and upstream's (`--upstream-scoring`).

Strict, exactly (the eval issue's statement):
- The content is the text of the LAST complete `<answer>...</answer>` pair, stripped, one trailing period
  removed. No complete pair, or an empty one: wrong and `unparseable` (counted apart from wrong answers).
- Stored options (HallusionBench's Yes/No are A/B): a letter alone as `X`, `(X)`, `X)`, `X.` (either case)
  within the number of options; a letter then text (`(X) t`, `X) t`, `X. t`) where t equals THAT option's text
  case-insensitively; or the bare text of exactly one option. Anything else is wrong (`invalid`).
- Letter golds without option texts (MMVP's (a)/(b), RealWorldQA's letters): the letter forms; the text after
  the letter is not checked; a bare text is wrong.
- Free-form golds: equal case-insensitively after stripping (a trailing period off the gold too); two numbers
  are equal when numerically equal.
- Golds: parentheses stripped from letters, case-insensitive; HallusionBench `1` is A (Yes), else B (No); a
  gold equal to one option's text is that option's letter.

Upstream (`upstream_score`) re-implements upstream `evals.py`'s `main` extraction and scoring line by line,
defects included (eval-spec section 4: the always-true fallback to "A", the broken `X)` pattern, text beating
letter, unmapped free-form golds, `mathruler.grade_answer` and `extract_answer` as extra "correct" paths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nemo_spatial.eval.benchmarks import FREE, HALLUSION, LETTER, LETTER_OR_FREE

OK, UNPARSEABLE, INVALID = "ok", "unparseable", "invalid"
OPEN, CLOSE = "<answer>", "</answer>"
_LETTER_ALONE = re.compile(r"^(?:\(([A-Za-z])\)|([A-Za-z])[).]?)$")
_LETTER_TEXT = re.compile(r"^(?:\(([A-Za-z])\)|([A-Za-z])[).])\s+(.+)$", re.DOTALL)
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
# Upstream benchmarks whose golds are mapped to letters (its "MCQ group").
UPSTREAM_MCQ = {
    "cv-bench",
    "cv-bench-2D",
    "cv-bench-3D",
    "blink-spatial",
    "blink-depth",
    "blink-counting",
    "blink-object",
    "blink-multi-view",
    "blink-jigsaw",
    "3dsrbench",
    "3dsrbench_full",
    "lego",
    "hallusionbench",
    "spatialreasoner",
    "robospatial",
    "robospatial_rgb",
    "stvqa",
}
UPSTREAM_UNMAPPED = {"realworld_qa", "spatialbench"}


@dataclass(frozen=True)
class Score:
    extracted: str | None  # what was read: an option letter, or the free-form text; None when nothing valid
    correct: bool
    status: str  # ok | unparseable (no complete answer pair, or empty) | invalid (content of no allowed form)


def answer_content(response: str | None) -> str | None:
    """The last complete `<answer>...</answer>` pair's text, stripped, one trailing period off; None if none."""
    text = response or ""
    end = text.rfind(CLOSE)
    if end < 0:
        return None
    start = text.rfind(OPEN, 0, end)
    if start < 0:
        return None
    content = text[start + len(OPEN) : end].strip()
    if content.endswith("."):
        content = content[:-1].rstrip()
    return content or None


def gold_letter(gold: str, form: str, choices: list[str] | None) -> str | None:
    """The gold's option letter (upper case), or None when the gold is free-form."""
    if form == HALLUSION:
        return "A" if gold.strip().rstrip(".") == "1" else "B"
    stripped = gold.strip().replace("(", "").replace(")", "").strip().rstrip(".").strip()
    if form == FREE:
        return None
    if len(stripped) == 1 and stripped.isalpha():
        return stripped.upper()
    if choices:
        matches = [i for i, c in enumerate(choices) if _norm(c) == _norm(gold)]
        if len(matches) == 1:
            return chr(ord("A") + matches[0])
    return None


def strict_score(response: str | None, gold: str, form: str, choices: list[str] | None) -> Score:
    content = answer_content(response)
    if content is None:
        return Score(None, False, UNPARSEABLE)
    letter = gold_letter(gold, form, choices)
    if letter is None:
        if form not in (FREE, LETTER_OR_FREE):
            return Score(None, False, INVALID)  # a letter benchmark whose gold is no letter: counted, not guessed
        return Score(content, _free_equal(content, gold), OK)
    read = read_option(content, choices) if choices else read_letter(content)
    if read is None:
        return Score(None, False, INVALID)
    return Score(read, read == letter, OK)


def read_option(content: str, choices: list[str]) -> str | None:
    """The option letter `content` names under the strict rules, with these stored option texts."""
    n = len(choices)
    alone = _LETTER_ALONE.match(content)
    if alone:
        letter = (alone.group(1) or alone.group(2)).upper()
        return letter if ord(letter) - ord("A") < n else None
    with_text = _LETTER_TEXT.match(content)
    if with_text:
        letter = (with_text.group(1) or with_text.group(2)).upper()
        index = ord(letter) - ord("A")
        if index < n and _norm(with_text.group(3)) == _norm(choices[index]):
            return letter
        return None
    matches = [i for i, c in enumerate(choices) if _norm(c) == _norm(content)]
    return chr(ord("A") + matches[0]) if len(matches) == 1 else None


def read_letter(content: str) -> str | None:
    """A letter in the letter forms, the text after it unchecked (no stored options to check it against)."""
    alone = _LETTER_ALONE.match(content) or _LETTER_TEXT.match(content)
    return (alone.group(1) or alone.group(2)).upper() if alone else None


def _norm(text: str) -> str:
    stripped = text.strip()
    return (stripped[:-1] if stripped.endswith(".") else stripped).strip().lower()


def _free_equal(content: str, gold: str) -> bool:
    a, b = _norm(content), _norm(gold)
    if _NUMBER.match(a) and _NUMBER.match(b):
        return float(a) == float(b)
    return a == b


# ---- upstream's scoring, defects included ----


def upstream_score(benchmark: str, response: str | None, gold: str, choices: list[str] | None) -> Score:
    """upstream `evals.py` `main`: what it stores as `pred_answer` and whether it counts the sample correct."""
    answer = response or ""
    if "Answer:" in answer:
        answer = answer.split("Answer:")[-1].strip()
    if answer and OPEN not in answer and CLOSE not in answer:
        answer = f"{OPEN}{answer.strip()}{CLOSE}"
    elif answer and OPEN not in answer and CLOSE in answer:
        answer = f"{OPEN}{answer.split(CLOSE)[0].strip()}{CLOSE}"
    if not (answer and OPEN in answer):
        return Score(None, False, UNPARSEABLE)  # upstream: "Failed to extract.", scored wrong
    tail = answer.split(OPEN)[-1]
    answer = (tail.split(CLOSE)[0] if CLOSE in tail else tail).strip()
    if benchmark in UPSTREAM_UNMAPPED:
        processed, answer = gold.strip(), answer.strip()
    elif benchmark in UPSTREAM_MCQ:
        processed, answer = _upstream_mcq(benchmark, answer, gold, choices)
    else:
        processed = _upstream_process_response(gold, choices)
    return Score(answer, _upstream_correct(processed, answer), OK)


def _upstream_mcq(benchmark: str, answer: str, gold: str, choices: list[str] | None) -> tuple[str, str]:
    processed = gold.replace("(", "").replace(")", "").strip()
    if benchmark == "hallusionbench":
        processed = "A" if processed.replace(".", "") == "1" else "B"
        choices = ["Yes", "No"]
    if not choices:
        return processed, answer
    lowered = [c.lower() for c in choices]
    if len(processed) > 1:
        processed = processed[0].lower()  # D7: a text gold becomes its first letter
    extracted = re.sub(r"^\([A-Za-z]\)\s*", "", answer)
    if extracted == answer:
        extracted = re.sub(r"^\[A-Za-z]\)\s*", "", answer)  # upstream's broken `X) ` pattern, as written
    extracted = extracted.replace("{", "").replace("}", "")
    if extracted.lower() in lowered:
        return processed, chr(65 + lowered.index(extracted.lower()))
    # Upstream's fallback tests `f'{X})'` alone (a non-empty string, always true): the first option wins.
    return processed, "A"


def _upstream_process_response(gold: str, choices: list[str] | None) -> str:
    if choices is not None and gold in choices:
        return chr(65 + choices.index(gold))
    return gold


def _upstream_correct(processed: str, answer: str) -> bool:
    if processed.lower() == answer.lower():
        return True
    try:
        from mathruler.grader import grade_answer  # imported late: it pulls in sympy

        if grade_answer(processed, answer):
            return True
    except Exception:  # noqa: BLE001 - a grading failure is "not equal", as upstream's would be at worst
        pass
    pred = answer
    if "(" in pred and ")" in pred:
        pred = pred.split("(")[1].split(")")[0]
    if pred and pred[-1] == ".":
        pred = pred[:-1]
    return pred.strip().lower() == processed.strip().lower()


def score(
    benchmark: str, form: str, response: str | None, gold: str, choices: list[str] | None, upstream: bool
) -> Score:
    if upstream:
        return upstream_score(benchmark, response, gold, choices)
    return strict_score(response, gold, form, choices)


__all__ = [
    "INVALID",
    "LETTER",
    "OK",
    "UNPARSEABLE",
    "Score",
    "answer_content",
    "score",
    "strict_score",
    "upstream_score",
]
