"""The end-of-run report: RUN_DIR/report.md, and the same figures as a short table on the console.

What a person asks first of a finished (or crashed) run: how many steps, how long, did the main metrics move
(first and last logged value), where the time went (the slowest phase, mean seconds per step and its share),
where the checkpoints and exports are, and the command that resumes it (`trainer.resume=true`, the default,
continues from `checkpoints/latest`). Everything comes from the run directory, so it works on demand too.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from nemo_spatial.checkpoint import latest_checkpoint
from nemo_spatial.report.metrics import MetricSeries

MAIN_METRICS = (
    ("reward/overall/mean", "reward (overall)"),
    ("reward/format/mean", "reward: format"),
    ("reward/count/mean", "reward: count"),
    ("reward/accuracy/mean", "reward: accuracy"),
    ("reward/spatial/mean", "reward: spatial"),
    ("val/reward/overall/mean", "validation reward"),
    ("actor/kl_mean", "KL to reference"),
    ("response/length/mean", "response length (tokens)"),
    ("actor/clip_frac_high", "clip fraction (high)"),
    ("actor/grad_norm", "grad norm"),
    ("throughput/tokens_per_s", "tokens/s"),
    ("timing/step_s", "step time (s)"),
)


@dataclass
class RunSummary:
    """The report's figures (all optional: a run that crashed early has few)."""

    run_dir: Path
    steps_logged: int
    total_steps: int | None
    wall_s: float | None
    metrics: list[tuple[str, float, float]] = field(default_factory=list)  # label, first, last
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # phase, mean s/step, share of step
    checkpoints: list[Path] = field(default_factory=list)
    latest: Path | None = None
    exports: list[Path] = field(default_factory=list)
    resume_command: str | None = None
    plots: list[Path] = field(default_factory=list)
    missing_plots: list[str] = field(default_factory=list)
    rollout_index: Path | None = None
    bad_lines: int = 0


def summarise(run_dir: Path, metrics: MetricSeries) -> RunSummary:
    config = _read_yaml(run_dir / "config.yaml")
    info = _read_json(run_dir / "run_info.json")
    total = config.get("trainer", {}).get("total_steps") if isinstance(config.get("trainer"), dict) else None
    summary = RunSummary(
        run_dir=run_dir,
        steps_logged=max(metrics.steps, default=0),
        total_steps=int(total) if isinstance(total, int) else None,
        wall_s=_wall_seconds(run_dir, info),
        bad_lines=metrics.bad_lines,
    )
    for key, label in MAIN_METRICS:
        pair = metrics.first_last(key)
        if pair is not None:
            summary.metrics.append((label, *pair))
    summary.phases = phase_shares(metrics)
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        summary.checkpoints = sorted(p for p in checkpoints.glob("step_*") if (p / "COMPLETE").exists())
        summary.latest = latest_checkpoint(run_dir)
    summary.exports = sorted(p for p in run_dir.rglob("*") if p.is_dir() and _is_export(p))
    summary.resume_command = resume_command(info)
    return summary


def phase_shares(metrics: MetricSeries) -> list[tuple[str, float, float]]:
    """(phase, mean seconds per step, share of the mean step time), slowest first."""
    phases = [k for k in metrics.names() if k.startswith("timing/") and k != "timing/step_s"]
    _, steps = metrics.series("timing/step_s")
    step_mean = sum(steps) / len(steps) if steps else 0.0
    rows = []
    for key in phases:
        _, values = metrics.series(key)
        mean = sum(values) / len(values)
        rows.append((key[len("timing/") :].removesuffix("_s"), mean, mean / step_mean if step_mean else 0.0))
    return sorted(rows, key=lambda row: -row[1])


def resume_command(info: dict[str, Any]) -> str | None:
    """The command line that started the run, as `python -m nemo_spatial.train ...` (it resumes by default)."""
    argv = info.get("argv")
    if not isinstance(argv, list) or not argv:
        return None
    args = [str(a) for a in argv]
    if args[0].endswith(("nemo_spatial/train.py", "nemo_spatial.train")):
        return shlex.join(["python", "-m", "nemo_spatial.train", *args[1:]])
    return shlex.join(["python", *args])


def _is_export(path: Path) -> bool:
    """A Hugging Face export: a folder with config.json and weights, outside the policy checkpoints."""
    if "checkpoints" in path.parts and "policy" in path.parts:
        return False
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def _wall_seconds(run_dir: Path, info: dict[str, Any]) -> float | None:
    started = info.get("started")
    metrics = run_dir / "metrics.jsonl"
    if not isinstance(started, str) or not metrics.exists():
        return None
    try:
        start = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None
    return max(0.0, metrics.stat().st_mtime - start)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _num(value: float) -> str:
    return f"{value:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve() if path.is_absolute() else root))
    except ValueError:
        return str(path)


def to_markdown(s: RunSummary) -> str:
    root = s.run_dir.resolve()
    steps = f"{s.steps_logged}" + (f" of {s.total_steps}" if s.total_steps is not None else "")
    lines = [f"# Run report: {s.run_dir.name}", "", f"- Directory: `{root}`", f"- Steps: {steps}"]
    lines.append(f"- Wall time: {_duration(s.wall_s)} (from the start to the last metrics record)")
    if s.phases:
        phase, mean, share = s.phases[0]
        lines.append(f"- Slowest phase: **{phase}**, {mean:.2f} s per step ({share:.0%} of the step time)")
    if s.bad_lines:
        lines.append(f"- metrics.jsonl: {s.bad_lines} line(s) not readable, skipped")
    lines += ["", "## Main metrics", "", "| metric | first | last |", "|---|---|---|"]
    lines += [f"| {label} | {_num(first)} | {_num(last)} |" for label, first, last in s.metrics]
    if s.phases:
        lines += ["", "## Time per step, by phase (mean)", "", "| phase | s/step | share |", "|---|---|---|"]
        lines += [f"| {phase} | {mean:.2f} | {share:.0%} |" for phase, mean, share in s.phases]
    lines += ["", "## Outputs", ""]
    ckpts = ", ".join(f"`{_rel(p, root)}`" for p in s.checkpoints) or "none"
    lines.append(f"- Checkpoints: {ckpts}" + (f" (latest: `{_rel(s.latest, root)}`)" if s.latest else ""))
    lines.append(f"- Hugging Face exports: {', '.join(f'`{_rel(p, root)}`' for p in s.exports) or 'none'}")
    if s.rollout_index is not None:
        lines.append(f"- Rollout viewer: `{_rel(s.rollout_index, root)}` (open in a browser)")
    if s.plots:
        lines.append(f"- Plots: {', '.join(f'`plots/{p.name}`' for p in s.plots)}")
    if s.missing_plots:
        lines.append(f"- Not plotted (not logged by this run): {', '.join(s.missing_plots)}")
    if s.resume_command:
        lines += ["", "## Resume", "", "```bash", s.resume_command, "```"]
        lines.append("(`trainer.resume=true`, the default, continues from `checkpoints/latest`.)")
    lines += [""] + [f"![{p.stem}](plots/{p.name})" for p in s.plots]
    return "\n".join(lines) + "\n"


def print_table(s: RunSummary) -> None:
    """The short version on the run's console."""
    from rich.table import Table

    from nemo_spatial.console import get_console

    table = Table(title=f"run {s.run_dir.name}: {s.steps_logged} steps in {_duration(s.wall_s)}", title_justify="left")
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for label, first, last in s.metrics[:8]:
        table.add_row(label, _num(first), _num(last))
    console = get_console()
    console.print(table)
    if s.phases:
        phase, mean, share = s.phases[0]
        console.print(f"slowest phase: {phase}, {mean:.2f} s per step ({share:.0%})", highlight=False)
    if s.latest is not None:
        console.print(f"latest checkpoint: {s.latest}", highlight=False)
    console.print(f"report: {s.run_dir.resolve() / 'report.md'}", highlight=False)
    if s.resume_command:
        console.print(f"resume: {s.resume_command}", highlight=False, soft_wrap=True)
