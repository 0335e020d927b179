"""PNG plots of a run's metrics under RUN_DIR/plots/: rewards, KL, response length, clip fractions, the time
of each phase per step, and the validation reward.

matplotlib's object API (`matplotlib.figure.Figure` with the Agg canvas), never pyplot: no global figure state,
no GUI backend, so it runs in the trainer's process at the end of a run and in tests. A plot whose metrics the
run did not log is left out (and named in the report), not drawn empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nemo_spatial.fileio import atomic_write
from nemo_spatial.report.metrics import MetricSeries

COMPONENTS = ("overall", "format", "count", "accuracy", "spatial")


@dataclass(frozen=True)
class PlotSpec:
    """One PNG: its file name, title, and the function that draws it (False when nothing to draw)."""

    name: str
    title: str
    draw: Callable[[Axes, MetricSeries], bool]


def _lines(ax: Axes, metrics: MetricSeries, keys: dict[str, str], marker: str = "") -> bool:
    drawn = False
    for key, label in keys.items():
        steps, values = metrics.series(key)
        if steps:
            ax.plot(steps, values, marker or ("o" if len(steps) < 3 else ""), label=label)
            drawn = True
    if drawn:
        ax.legend(fontsize="small")
    return drawn


def _rewards(ax: Axes, metrics: MetricSeries) -> bool:
    drawn = _lines(ax, metrics, {f"reward/{c}/mean": c for c in COMPONENTS})
    ax.set_ylabel("mean reward (train rollouts)")
    return drawn


def _kl(ax: Axes, metrics: MetricSeries) -> bool:
    keys = {"actor/kl_mean": "KL to reference (mean)", "actor/ppo_kl": "KL to old policy (PPO)"}
    drawn = _lines(ax, metrics, keys)
    ax.set_ylabel("KL")
    return drawn


def _length(ax: Axes, metrics: MetricSeries) -> bool:
    steps, mean = metrics.series("response/length/mean")
    if not steps:
        return False
    ax.plot(steps, mean, "o-" if len(steps) < 3 else "-", label="mean")
    low_steps, low = metrics.series("response/length/min")
    high_steps, high = metrics.series("response/length/max")
    if low_steps == steps and high_steps == steps:
        ax.fill_between(steps, low, high, alpha=0.2, label="min..max")
    ax.set_ylabel("response tokens")
    truncated_steps, truncated = metrics.series("response/truncated_fraction")
    if truncated_steps:
        twin = ax.twinx()
        twin.plot(truncated_steps, truncated, "r--", label="truncated fraction")
        twin.set_ylabel("truncated fraction", color="r")
        twin.set_ylim(0, 1.05)
    ax.legend(fontsize="small", loc="upper left")
    return True


def _clip(ax: Axes, metrics: MetricSeries) -> bool:
    keys = {
        "actor/clip_frac_low": "clipped low (ratio < 1 - eps)",
        "actor/clip_frac_high": "clipped high (ratio > 1 + eps)",
        "actor/dual_clip_frac": "dual clip",
    }
    drawn = _lines(ax, metrics, keys)
    ax.set_ylabel("fraction of tokens")
    return drawn


def _timing(ax: Axes, metrics: MetricSeries) -> bool:
    """Stacked bars: each phase's seconds per step, and what the phases do not cover ('other')."""
    phases = [k for k in metrics.names() if k.startswith("timing/") and k != "timing/step_s"]
    if not phases:
        return False
    steps = metrics.steps
    bottom = [0.0] * len(steps)
    for key in phases:
        values = [record.get(key, 0.0) for record in metrics.records]
        ax.bar(steps, values, bottom=bottom, label=key[len("timing/") :].removesuffix("_s"))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    totals = [record.get("timing/step_s", b) for record, b in zip(metrics.records, bottom, strict=True)]
    other = [max(0.0, t - b) for t, b in zip(totals, bottom, strict=True)]
    if any(o > 0 for o in other):
        ax.bar(steps, other, bottom=bottom, label="other", color="lightgrey")
    ax.set_ylabel("seconds")
    ax.legend(fontsize="small")
    return True


def _validation(ax: Axes, metrics: MetricSeries) -> bool:
    drawn = _lines(ax, metrics, {f"val/reward/{c}/mean": c for c in COMPONENTS}, marker="o-")
    ax.set_ylabel("mean reward (validation)")
    return drawn


PLOTS = (
    PlotSpec("rewards.png", "Reward and its components", _rewards),
    PlotSpec("kl.png", "KL divergence", _kl),
    PlotSpec("response_length.png", "Response length", _length),
    PlotSpec("clip_fractions.png", "Clipped fractions of the policy ratio", _clip),
    PlotSpec("timing.png", "Time per step, by phase", _timing),
    PlotSpec("validation.png", "Validation reward", _validation),
)


def write_plots(metrics: MetricSeries, out_dir: Path, run_name: str = "") -> tuple[list[Path], list[str]]:
    """Draw every plot that has data; returns (written PNGs, titles of the plots left out for lack of data)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    missing: list[str] = []
    for spec in PLOTS:
        figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        if not spec.draw(ax, metrics):
            missing.append(spec.title)
            continue
        ax.set_title(f"{spec.title}{f' - {run_name}' if run_name else ''}")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        path = out_dir / spec.name
        with atomic_write(path, "wb") as handle:
            figure.savefig(handle, format="png")
        written.append(path)
    return written, missing
