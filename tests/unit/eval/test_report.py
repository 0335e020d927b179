"""Reports beside the paper: which rows, and the numbers in report.md / report.png."""

from __future__ import annotations

import json
from pathlib import Path

from nemo_spatial.eval.paper import PAPER, paper_rows
from nemo_spatial.eval.report import write_outputs


def test_paper_rows_follow_the_base_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"hidden_size": 2048}}))
    assert paper_rows(str(tmp_path)) == ["Qwen2.5-VL-3B", "SpatialThinker-3B"]
    assert paper_rows("Qwen/Qwen2.5-VL-7B-Instruct") == ["Qwen2.5-VL-7B", "SpatialThinker-7B"]
    assert paper_rows("gpt-4o-2024-05-13") == ["GPT-4o"]
    assert paper_rows("tiny") == []
    assert PAPER["SpatialThinker-7B"]["MindCube-tiny"] == 45.1 and PAPER["GPT-4o"]["CV-2D"] == 75.8


def test_report_sets_both_scorings_beside_the_paper(tmp_path: Path) -> None:
    records = [
        {"benchmark": "cv-bench-2D", "sample_id": str(i), "task": "Count", "choices": ["3", "2"], "answer": "(B)",
         "response": response, "row": i, "meta": {"source": "COCO" if i % 2 else "ADE20K"}}
        for i, response in enumerate(["<answer>B</answer>", "<answer>(B)</answer>", "<answer>A</answer>", "B"])
    ]  # fmt: skip
    results = write_outputs(tmp_path, records, upstream=False, model="m", paper_models=["SpatialThinker-3B"])
    bench = results["benchmarks"]["cv-bench-2D"]
    assert (bench["accuracy"], bench["unparseable"]) == (0.5, 1)
    assert bench["alternative"]["accuracy"] == 0.0  # upstream: every one falls back to "A" (D2)
    report = (tmp_path / "report.md").read_text()
    assert "paper: SpatialThinker-3B" in report and "| 71.0 |" in report
    assert "accuracy % (upstream)" in report
    assert (tmp_path / "report.png").stat().st_size > 1000
