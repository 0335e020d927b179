"""Where per-step metrics go: JSONL (always), TensorBoard, Weights & Biases, and the console.

One `MetricsLogger` fans a flat `{name: number}` dict out to every enabled sink. Only the first rank of a
run logs (the trainer gives the others a disabled logger). Sinks:
- JSONL: `metrics.jsonl` in the run directory, one line per step, flushed every line (survives a crash).
- TensorBoard: `torch.utils.tensorboard.SummaryWriter` under `tensorboard/`.
- W&B: `wandb.init(mode=...)`; `offline` (the default) writes under `wandb/` with no network, to be
  synced later with `wandb sync`; `online` needs a key; `disabled` turns it off.
- Console: a rich progress bar over the run's steps and, above it, one line per step with the numbers that
  matter (`nemo_spatial.console.step_line`) and what third-party output was noticed since the last line.
Non-finite values are logged as they are (JSONL writes NaN/Infinity) so a diverging run stays visible.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from nemo_spatial.console import STEP_LINE_KEYS, get_console, pending_notices, step_line
from nemo_spatial.errors import ConfigError

logger = logging.getLogger(__name__)

WANDB_MODES = ("offline", "online", "disabled")
CONSOLE_KEYS = STEP_LINE_KEYS  # what the console shows each step


@dataclass
class LoggingConfig:
    """Metrics sinks. JSONL is always written; the rest by flag."""

    tensorboard: bool = True
    wandb_mode: str = "offline"
    wandb_project: str = "nemo-spatial"
    progress_bar: bool = True
    rollout_sample_every: int = 5

    def __post_init__(self) -> None:
        if self.wandb_mode not in WANDB_MODES:
            raise ConfigError(f"logging.wandb_mode={self.wandb_mode!r}; use one of: {', '.join(WANDB_MODES)}")
        if self.rollout_sample_every < 0:
            raise ConfigError("logging.rollout_sample_every must be >= 0 (0 saves no rollout samples)")


class MetricsLogger:
    """Fan-out of per-step metrics; `close()` flushes every sink."""

    def __init__(self, cfg: LoggingConfig, run_dir: Path, run_name: str, total_steps: int, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb: Any = None
        self._wandb: Any = None
        self._progress: Any = None
        self._task: Any = None
        self._total_steps = total_steps
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl_path = run_dir / "metrics.jsonl"
        self._jsonl = self._jsonl_path.open("a", buffering=1)
        self._tb_dir = run_dir / "tensorboard" if cfg.tensorboard else None
        if self._tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self._tb_dir))
        if cfg.wandb_mode != "disabled":
            self._wandb = _start_wandb(cfg, run_dir, run_name)
        if cfg.progress_bar:
            self._progress, self._task = _start_progress(total_steps)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        assert self._jsonl is not None
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        notices = pending_notices()  # also without the bar: one line, and it names the log with the rest
        if notices is not None:
            get_console().print(Text(notices), soft_wrap=True)
        if self._progress is not None:
            self._progress.console.print(Text(step_line(step, self._total_steps, metrics)), soft_wrap=True)
            reward = metrics.get("reward/overall/mean")
            self._progress.update(
                self._task, completed=step, description="" if reward is None else f"reward {_short(reward)}"
            )

    def resumed_at(self, step: int) -> None:
        """A run resumed from the checkpoint of `step`: forget what the interrupted run logged after it.

        Those steps are trained again, and a second record of each would make curves go back and forth.
        metrics.jsonl keeps its records up to `step` (and loses a line cut short by the crash); TensorBoard
        hides the later events (`purge_step`); W&B starts a new run each time and needs nothing.
        """
        if not self.enabled:
            return
        assert self._jsonl is not None
        self._jsonl.close()
        kept = [line for line in self._jsonl_path.read_text().splitlines() if _logged_step(line) <= step]
        staged = self._jsonl_path.with_suffix(".jsonl.tmp")
        staged.write_text("".join(line + "\n" for line in kept))
        staged.replace(self._jsonl_path)  # atomic: a crash here leaves the old file or the new one
        self._jsonl = self._jsonl_path.open("a", buffering=1)
        if self._tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(log_dir=str(self._tb_dir), purge_step=step + 1)
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._jsonl is not None:
            self._jsonl.close()
        self.enabled = False


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; infinity for a line that is not a whole record (cut off by a crash)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _start_wandb(cfg: LoggingConfig, run_dir: Path, run_name: str) -> Any:
    try:
        import wandb

        return wandb.init(
            project=cfg.wandb_project,
            name=run_name,
            dir=str(run_dir),
            mode=cfg.wandb_mode,  # type: ignore[arg-type]  # validated in LoggingConfig
            settings=wandb.Settings(silent=True),
        )
    except Exception as error:  # noqa: BLE001 - W&B trouble must not stop training; JSONL still has everything
        logger.warning("W&B logging disabled (%s: %s); metrics still go to metrics.jsonl", type(error).__name__, error)
        return None


def _start_progress(total_steps: int) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # The run's console (nemo_spatial.console), and no redirection of stdout/stderr: library output that
    # the console routes to the log file must not be pulled back onto the screen by the live display.
    progress = Progress(
        TextColumn("step"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=get_console(),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task("", total=total_steps)
    progress.start()
    return progress, task
