"""report.md, the plots and the CLI, on a run directory in the trainer's formats."""

import json

import pytest
from PIL import Image

from nemo_spatial.report import write_run_report
from nemo_spatial.report.__main__ import main
from nemo_spatial.report.metrics import read_metrics
from nemo_spatial.report.plots import PLOTS, write_plots
from tests.unit.report.run_fixture import write_run


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "tiny-run")


def test_report_names_steps_metrics_slowest_phase_checkpoints_and_the_resume_command(run_dir):
    write_run_report(run_dir)
    report = (run_dir / "report.md").read_text()
    assert "- Steps: 4 of 4" in report
    assert "- Wall time: " in report and "unknown" not in report
    assert "Slowest phase: **generate**, 4.00 s per step (61% of the step time)" in report
    assert "| reward (overall) | 0.1 | 0.4 |" in report and "| KL to reference | 0.001 | 0.004 |" in report
    assert "| validation reward | 0.1 | 0.2 |" in report
    assert "`checkpoints/step_000002`, `checkpoints/step_000004` (latest: `checkpoints/step_000004`)" in report
    assert "python -m nemo_spatial.train --config conf/debug/tiny_cpu.yaml" in report
    assert "`rollouts/index.html`" in report


def test_every_plot_is_a_png_with_content(run_dir):
    write_run_report(run_dir)
    for spec in PLOTS:
        with Image.open(run_dir / "plots" / spec.name) as image:
            assert image.format == "PNG" and image.size == (800, 450)
            assert len(image.convert("RGB").getcolors(1 << 16) or []) > 20  # lines and text, not a blank canvas


def test_plots_without_data_are_named_not_drawn(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/overall/mean": 0.5}) + "\n{cut off")
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert metrics.bad_lines == 1 and metrics.steps == [1]
    written, missing = write_plots(metrics, tmp_path / "plots")
    assert [p.name for p in written] == ["rewards.png"]
    assert "KL divergence" in missing and "Validation reward" in missing


def test_cli_writes_the_report_and_refuses_a_folder_that_is_no_run(run_dir, tmp_path, capsys):
    assert main([str(run_dir)]) == 0
    assert (run_dir / "report.md").exists() and (run_dir / "rollouts" / "step_000004" / "index.html").exists()
    assert "slowest phase: generate" in capsys.readouterr().out
    from nemo_spatial.cli import run_main

    assert run_main(main, [str(tmp_path / "nothing")]) == 2
    assert "holds neither metrics.jsonl" in capsys.readouterr().err
