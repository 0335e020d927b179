"""Extraction and scoring: the strict rules case by case, and every defect example of eval-spec section 4
under both modes (upstream's column and the 'true' column)."""

from __future__ import annotations

import pytest

from nemo_spatial.eval.benchmarks import BENCHMARKS
from nemo_spatial.eval.scoring import INVALID, OK, UNPARSEABLE, answer_content, strict_score, upstream_score

CV_COUNT = ["3", "2", "1", "0"]
BLINK_REL = ["yes", "no"]
BLINK_DEPTH = ["A is closer", "B is closer"]
YES_NO = ["Yes", "No"]


def tag(text: str) -> str:
    return f"<think>...</think><answer>{text}</answer>"


def strict(key: str, response: str, gold: str, choices: list[str] | None):
    return strict_score(response, gold, BENCHMARKS[key].gold_form, choices)


# (benchmark, response, gold, choices, upstream's (pred, correct), strict correct, strict status)
DEFECTS = [
    ("D2 fallback: bare letter", "cv-bench", tag("B"), "(B)", CV_COUNT, ("A", False), True, OK),
    ("D2 fallback: (B)", "cv-bench", tag("(B)"), "(B)", CV_COUNT, ("A", False), True, OK),
    ("D2 fallback: B) 2", "cv-bench", tag("B) 2"), "(B)", CV_COUNT, ("A", False), True, OK),
    ("D2 rewards junk", "cv-bench", tag("I cannot tell"), "(A)", CV_COUNT, ("A", True), False, INVALID),
    ("D2 trailing period", "blink-spatial", tag("(B) no."), "(B)", BLINK_REL, ("A", False), True, OK),
    ("D2 bare letter", "blink-depth", tag("B"), "(B)", BLINK_DEPTH, ("A", False), True, OK),
    ("D2 no tags", "cv-bench", "The answer is (B) 2.", "(B)", CV_COUNT, ("A", False), False, UNPARSEABLE),
    ("D2 truncated", "cv-bench", "<answer> (B", "(A)", CV_COUNT, ("A", True), False, UNPARSEABLE),
    ("D2 HallB no", "hallusionbench", tag("(B) No."), "0", YES_NO, ("A", False), True, OK),
    ("D2 HallB unclear", "hallusionbench", tag("unclear"), "1", YES_NO, ("A", True), False, INVALID),
    ("D3 text beats letter", "cv-bench", tag("(A) 2"), "(B)", CV_COUNT, ("B", True), False, INVALID),
    ("D4 RWQA letter + dot", "realworld_qa", tag("B. Left"), "B", None, ("B. Left", False), True, OK),
    ("D4 RWQA invented option", "realworld_qa", tag("(A) 3"), "3", None, ("(A) 3", False), False, OK),
    ("D5 SpatialBench", "spatialbench", tag("(A) Yes"), "Yes", None, ("(A) Yes", False), False, OK),
    ("D6 MMVP (a)", "mmvp", tag("(a) Open"), "(a)", None, ("(a) Open", False), True, OK),
    ("D6 MMVP a", "mmvp", tag("A. Open"), "a", None, ("A. Open", False), True, OK),
    ("D7 text gold + choices", "robospatial", tag("(A) Yes"), "Yes", YES_NO, ("A", False), True, OK),
]


@pytest.mark.parametrize(("case", "key", "response", "gold", "choices", "up", "ok", "status"), DEFECTS,
                         ids=[d[0] for d in DEFECTS])  # fmt: skip
def test_defect_examples_under_both_modes(case, key, response, gold, choices, up, ok, status) -> None:
    upstream = upstream_score(key, response, gold, choices)
    assert (upstream.extracted, upstream.correct) == up
    result = strict(key, response, gold, choices)
    assert (result.correct, result.status) == (ok, status)


def test_answer_content_takes_the_last_complete_pair() -> None:
    assert answer_content("<answer>(A)</answer> then <answer> (B) 2. </answer>") == "(B) 2"
    assert answer_content("<answer>(A)</answer><answer>(B)") == "(A)"  # the unclosed tail is no pair
    assert answer_content("<answer>  .</answer>") is None
    assert answer_content("<answer></answer>") is None
    assert answer_content(None) is None
    assert answer_content("(B)</answer>") is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("B", "B"), ("b", "B"), ("(B)", "B"), ("B)", "B"), ("B.", "B"), ("(b) 2", "B"), ("B) 2", "B"),
        ("B. 2", "B"), ("2", "B"), ("(B) 2.", "B"), ("E", None), ("(B) 3", None), ("B 2", None),
        ("(B) two", None), ("the answer is B", None),
    ],
)  # fmt: skip
def test_strict_option_forms(content: str, expected: str | None) -> None:
    result = strict_score(tag(content), "(B)", "letter", CV_COUNT)
    assert result.extracted == expected
    assert result.correct is (expected == "B")


def test_bare_text_must_name_exactly_one_option() -> None:
    assert strict_score(tag("same"), "(A)", "letter", ["same", "same"]).status == INVALID


def test_letter_gold_without_options_checks_only_the_letter() -> None:
    assert strict("mmvp", tag("(b) anything at all"), "(b)", None).correct
    assert not strict("mmvp", tag("Closed"), "(b)", None).correct
    assert strict("mmstar", tag("C"), "C", None).correct


def test_free_form_golds() -> None:
    assert strict("spatialbench", tag("yes"), "Yes", None).correct
    assert strict("spatialbench", tag("3.0"), "3", None).correct
    assert strict("realworld_qa", tag("Three"), "three.", None).correct
    assert not strict("realworld_qa", tag("4"), "3", None).correct


def test_hallusion_gold_forms() -> None:
    assert strict("hallusionbench", tag("Yes"), "1", YES_NO).correct
    assert strict("hallusionbench", tag("(A)"), "1", YES_NO).correct
    assert not strict("hallusionbench", tag("(A) Yes"), "0", YES_NO).correct


def test_upstream_failed_extraction_and_answer_prefix() -> None:
    assert upstream_score("cv-bench", None, "(A)", CV_COUNT).status == UNPARSEABLE
    # "Answer:" keeps what follows its last occurrence; the bare text maps to its option
    assert upstream_score("cv-bench", "reasoning... Answer: 2", "(B)", CV_COUNT).extracted == "B"
