"""The viewer on an eval run's samples.jsonl (the eval's per-sample format): a page per benchmark, wrong first."""

import re
import shutil
from pathlib import Path

from nemo_spatial.report.__main__ import main
from nemo_spatial.report.eval_view import read_samples, render_eval
from tests.unit.report.chromium import dump_dom

FIXTURE = Path(__file__).with_name("eval_samples.jsonl")


def test_fixture_reads_with_its_bad_lines_named():
    samples, problems = read_samples(FIXTURE)
    assert [s.sample_id for s in samples] == ["cvb-0001", "cvb-0002", "cvb-0003", "3dsr-17", "3dsr-18"]
    assert len(problems) == 2 and problems[0].startswith("line 4:") and "missing field(s) task" in problems[1]


def test_one_page_per_benchmark_with_wrong_answers_first(tmp_path):
    pages = render_eval(FIXTURE, tmp_path / "viewer")
    assert [p.name for p in pages] == ["3dsrbench.html", "cv-bench.html", "index.html"]
    cv = pages[1].read_text()
    assert "cv-bench: 33.3% of 3 correct; wrong answers first" in cv
    order = re.findall(r"<h2>(\S+) \(", cv)
    assert order == ["cvb-0002", "cvb-0003", "cvb-0001"]  # wrong ones (in file order), then the correct one
    assert "(A) left <span class='ok'>gold</span>" in cv and "(B) right <span class='bad'>chosen</span>" in cv
    assert "object 0 {&quot;id&quot;: &quot;lamp.1&quot;" in cv  # why its scene fails the format check
    assert "extracted: <b>(nothing)</b>" in cv
    index = pages[-1].read_text()
    assert "href='cv-bench.html'" in index and "2 line(s) not read" in index
    dom = dump_dom(pages[0], tmp_path / "profile")  # opens from disk in a browser, nothing fetched
    assert "3dsrbench: 50.0% of 2 correct" in dom and dom.index("3dsr-18") < dom.index("3dsr-17")


def test_cli_on_an_eval_directory(tmp_path, capsys):
    shutil.copy(FIXTURE, tmp_path / "samples.jsonl")
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "viewer" / "cv-bench.html").exists()
    assert "2 benchmark page(s)" in capsys.readouterr().out
