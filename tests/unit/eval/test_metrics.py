from __future__ import annotations

import pytest

from nemo_spatial.eval.metrics import Scored, benchmark_results, summary, wilson


def scored(sample_id: str, correct: bool, task: str | None = None, row: int = 0, status: str = "ok", **meta):
    return Scored(sample_id, task, correct, status, row, meta)


def test_wilson_matches_known_values() -> None:
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4901625, abs=1e-6)
    assert high == pytest.approx(0.9433178, abs=1e-6)
    assert wilson(0, 10)[0] == 0.0
    assert wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_summary_counts_errors_apart_and_unparseable_as_wrong() -> None:
    result = summary([scored("a", True), scored("b", False, status="unparseable"), scored("c", False, status="error")])
    assert (result["n"], result["correct"], result["unparseable"], result["errors"]) == (2, 1, 1, 1)
    assert result["accuracy"] == 0.5


def test_cv_bench_source_weighted() -> None:
    samples = [scored("1", True, source="ADE20K"), scored("2", False, source="ADE20K"),
               scored("3", True, source="COCO"), scored("4", False, source="Omni3D")]  # fmt: skip
    metric = benchmark_results("cv_bench", samples)["standard_metric"]
    assert metric["2D"] == pytest.approx(0.75)
    assert metric["3D"] == 0.0
    assert metric["value"] == pytest.approx(0.375)


def test_circular_needs_every_variant() -> None:
    samples = [scored("q1-0", True), scored("q1-1", False), scored("q2-0", True), scored("q2-1", True)]
    assert benchmark_results("circular", samples)["standard_metric"]["value"] == 0.5


def test_pairs_count_the_last_pair() -> None:
    samples = [scored(str(i), c, row=i) for i, c in enumerate([True, True, True, False, True, True])]
    metric = benchmark_results("pairs", samples)["standard_metric"]
    assert (metric["pairs"], metric["value"]) == (3, pytest.approx(2 / 3))


def test_hallusion_question_and_figure_accuracy() -> None:
    base = {"subcategory": "s", "set_id": "0"}
    samples = [
        scored("a", True, "VD", figure_id="0", question_id="0", **base),
        scored("b", False, "VD", figure_id="0", question_id="1", **base),
        scored("c", True, "VD", figure_id="1", question_id="0", **base),
        scored("d", True, "VD", figure_id="1", question_id="1", **base),
    ]
    metric = benchmark_results("hallusion", samples)["standard_metric"]
    assert metric["aAcc"] == 0.75
    assert metric["qAcc"] == 0.5  # question 1 fails on figure 0
    assert metric["fAcc"] == 0.5  # figure 0 has a wrong answer


def test_per_task_results() -> None:
    result = benchmark_results("accuracy", [scored("a", True, "x"), scored("b", False, "y"), scored("c", True, "y")])
    assert result["tasks"]["y"]["accuracy"] == 0.5
    assert result["standard_metric"] is None
