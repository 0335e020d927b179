"""The run view: plots, the HTML rollout and eval viewers, and the end-of-run report.

`write_run_report(run_dir)` builds everything from what a training run wrote (metrics.jsonl, rollouts/,
checkpoints/, config.yaml, run_info.json): `plots/*.png`, `rollouts/step_N/index.html` and `rollouts/index.html`,
and `report.md`. `finish_run(run_dir)` is the trainer's call at the end of a run: the same, plus the short table
on the console, and never an exception (a report must not turn a finished run into a failed one).
`python -m nemo_spatial.report RUN_DIR` does it on demand, also for an eval run's samples.jsonl.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nemo_spatial.fileio import atomic_write_text
from nemo_spatial.report.metrics import read_metrics
from nemo_spatial.report.plots import write_plots
from nemo_spatial.report.rollout_view import render_rollouts
from nemo_spatial.report.summary import RunSummary, print_table, summarise, to_markdown

logger = logging.getLogger(__name__)

__all__ = ["finish_run", "run_similarity", "write_run_report"]


def run_similarity(run_dir: Path) -> object:
    """The label similarity the run's reward used (config.yaml's reward.similarity); trigram when unavailable."""
    from nemo_spatial.report.summary import _read_yaml
    from nemo_spatial.reward.similarity import TrigramSimilarity, make_similarity

    reward = _read_yaml(run_dir / "config.yaml").get("reward", {})
    backend = reward.get("similarity", "trigram") if isinstance(reward, dict) else "trigram"
    try:
        return make_similarity(str(backend))
    except (ImportError, RuntimeError, ValueError) as error:
        logger.warning("label similarity %r unavailable (%s); the viewer matches boxes with trigram", backend, error)
        return TrigramSimilarity()


def write_run_report(run_dir: Path | str) -> RunSummary:
    """Plots, rollout pages and report.md of the run in `run_dir`; returns the summary."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    summary = summarise(run_dir, metrics)
    summary.plots, summary.missing_plots = write_plots(metrics, run_dir / "plots", run_dir.name)
    if (run_dir / "rollouts").is_dir():
        pages = render_rollouts(run_dir, run_similarity(run_dir))  # type: ignore[arg-type]
        summary.rollout_index = pages[-1]
    atomic_write_text(run_dir / "report.md", to_markdown(summary))
    return summary


def finish_run(run_dir: Path | str) -> None:
    """End of a training run: the report, and its table on the console; a failure here is logged, not raised."""
    try:
        print_table(write_run_report(run_dir))
    except Exception as error:  # noqa: BLE001 - training is done and checkpointed; the report is a view of it
        logger.warning("run report not written (%s: %s); `python -m nemo_spatial.report %s` retries it",
                       type(error).__name__, error, run_dir)  # fmt: skip
