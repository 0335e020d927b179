"""What a run prints: our own log lines, one line per step, and one line per kind of third-party notice.

A training run imports Megatron, Megatron-Bridge, Transformer Engine probes, Apex probes, transformers and
datasets, and each of them prints: fallback warnings (one per module that looks for Apex), the DDP config and
the gradient-buffer parameter list, deprecation notices, progress bars of dataset preparation. All of that goes
to the run's log file (`<run_dir>/logs/train.log`, `rank<N>.log` for the other ranks), and the console gets
one line per kind of notice, e.g.

    noticed: Transformer Engine not installed: local layer spec, torch kernels (x9); ... full log: <path>

`run_console(run_dir, verbose)` sets this up for the duration of a `with` block:
- logging: every record goes to the log file; the console shows `nemo_spatial.*` records at INFO and above
  and every logger's ERROR and above (errors are never hidden);
- `warnings.warn` goes through logging (`logging.captureWarnings`), so to the log file;
- Python-level stdout/stderr writes of libraries (Megatron's `print`s, tqdm bars) go to the log file; a line
  on stderr that reads like an error (`Traceback`, `Error`, `error:`), and everything after a traceback
  starts, is also shown;
- `verbose=True` (`--verbose`, NEMO_SPATIAL_VERBOSE=1) leaves stdout/stderr alone and shows every record.
Output written to file descriptors 1/2 from C code bypasses Python and still reaches the terminal.

The console is a `rich.console.Console` on the real stdout, shared with the progress bar
(`logging_sinks.MetricsLogger`), so log lines and step lines print above the live bar.
"""

from __future__ import annotations

import io
import logging
import math
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.text import Text

OWN_LOGGER = "nemo_spatial"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (pattern on a message, what the console says about it). The first match names a message's kind; what
# matches none is counted as "other third-party warnings" (warnings and above only; INFO chatter is just logged).
NOTICE_KINDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"Transformer Engine (and Apex )?(are|is) not installed|transformer-engine>=\S+ .*version is 0\.0\.0"
        ),
        "Transformer Engine not installed: local layer spec, torch kernels",
    ),
    (re.compile(r"Apex is not installed"), "Apex not installed: torch norms"),
    (re.compile(r"No CUDA runtime is found"), "no CUDA runtime: CPU"),
    (re.compile(r"gradient_accumulation_fusion requires"), "gradient-accumulation fusion off (needs TE or Apex)"),
    (
        re.compile(r"Setting up DistributedDataParallel with config|Params for bucket|Setting up optimizer with"),
        "Megatron DDP/optimizer config dump",
    ),
    (re.compile(r"deprecated|DEPRECATED|FutureWarning|DeprecationWarning"), "deprecation notices"),
)
OTHER_KIND = "other third-party warnings"
ERROR_LINE = re.compile(r"^(Traceback|\S*(Error|Exception)\b|error:|ERROR|CRITICAL|FATAL)")

_console: Console | None = None
_board: NoticeBoard | None = None


def get_console() -> Console:
    """The run's console (the real stdout when `run_console` is active, else the current sys.stdout)."""
    return _console if _console is not None else Console(highlight=False)


def pending_notices() -> str | None:
    """The 'noticed: ...' line for kinds of third-party output not reported yet (None when nothing is new)."""
    return _board.new_summary() if _board is not None else None


@dataclass
class NoticeBoard:
    """Counts third-party messages by kind and says, once per new kind, what was noticed."""

    log_path: Path
    counts: dict[str, int] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)

    def record(self, message: str, is_warning: bool) -> None:
        for pattern, kind in NOTICE_KINDS:
            if pattern.search(message):
                self.counts[kind] = self.counts.get(kind, 0) + 1
                return
        if is_warning:
            self.counts[OTHER_KIND] = self.counts.get(OTHER_KIND, 0) + 1

    def new_summary(self) -> str | None:
        """One line naming the kinds not reported before (with counts so far), or None when none are new."""
        new = [kind for kind in self.counts if kind not in self._reported]
        if not new:
            return None
        self._reported.update(new)
        shown = "; ".join(f"{kind} (x{self.counts[kind]})" if self.counts[kind] > 1 else kind for kind in new)
        return f"noticed: {shown}; full log: {self.log_path}"


class _ConsoleHandler(logging.Handler):
    """Our records (and everyone's errors) on the rich console; third-party ones only counted."""

    def __init__(self, console: Console, board: NoticeBoard, verbose: bool) -> None:
        super().__init__(level=logging.DEBUG)
        self.console, self.board, self.verbose = console, board, verbose

    def emit(self, record: logging.LogRecord) -> None:
        try:
            own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
            shown = self.verbose or record.levelno >= logging.ERROR or (own and record.levelno >= logging.INFO)
            if not own:
                self.board.record(record.getMessage(), record.levelno >= logging.WARNING)
            if shown:
                self.console.print(Text(_console_text(record, self.format(record))), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _console_text(record: logging.LogRecord, formatted: str) -> str:
    if record.name.startswith(OWN_LOGGER) and record.levelno == logging.INFO:
        return formatted.split(": ", 1)[-1] if record.exc_info is None else formatted
    return formatted


class _LogStream(io.TextIOBase):
    """A stdout/stderr stand-in: every line to the log file; error-looking lines also to the real stream."""

    def __init__(self, log: TextIO, real: TextIO, board: NoticeBoard, echo_errors: bool) -> None:
        self.log, self.real, self.board, self.echo_errors = log, real, board, echo_errors
        self._partial = ""
        self._in_traceback = False

    def write(self, text: str) -> int:
        self.log.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._route(line)
        return len(text)

    def _route(self, line: str) -> None:
        stripped = line.lstrip("\r")
        if not stripped.strip():
            return
        self.board.record(stripped, is_warning=False)
        if not self.echo_errors:
            return
        if stripped.startswith("Traceback"):
            self._in_traceback = True
        if self._in_traceback or ERROR_LINE.match(stripped):
            self.real.write(stripped + "\n")
            self.real.flush()

    def flush(self) -> None:
        self.log.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that writes to the descriptor itself (faulthandler, subprocesses) gets the terminal's: a crash
        # report from C must reach the person, and such output never passed through Python anyway.
        return self.real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # io.TextIOBase declares it read-only
        return "utf-8"


@contextmanager
def run_console(run_dir: Path | str, verbose: bool = False, rank: int = 0) -> Iterator[NoticeBoard]:
    """Route this process's output as the module docstring says until the block ends (then restore it)."""
    global _console, _board
    log_dir = Path(run_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / ("train.log" if rank == 0 else f"rank{rank}.log")
    board = NoticeBoard(log_path)
    real_out, real_err = sys.stdout, sys.stderr
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    with open(log_path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        console = Console(file=real_out, highlight=False, stderr=False)
        file_handler = logging.StreamHandler(log)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        console_handler = _ConsoleHandler(console, board, verbose)
        console_handler.setFormatter(logging.Formatter(LOG_FORMAT if rank == 0 else f"rank{rank} {LOG_FORMAT}"))
        if rank != 0 and not verbose:
            console_handler.setLevel(logging.WARNING)  # the driver speaks for the run; other ranks warn and fail
        root.handlers = [file_handler, console_handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        moved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
        if not verbose:
            out_stream = _LogStream(log, real_out, board, echo_errors=False)
            err_stream = _LogStream(log, real_err, board, echo_errors=True)
            sys.stdout, sys.stderr = out_stream, err_stream  # type: ignore[assignment]
            moved = _redirect_library_handlers({id(real_out): out_stream, id(real_err): err_stream})
        _console, _board = console, board
        try:
            yield board
        finally:
            summary = board.new_summary()
            if summary is not None and rank == 0:
                console.print(Text(summary), soft_wrap=True)
            sys.stdout, sys.stderr = real_out, real_err
            for handler, stream in moved:
                handler.setStream(stream)
            logging.captureWarnings(False)
            root.handlers, root.level = saved_handlers, saved_level
            _console = None
            _board = None


def _redirect_library_handlers(streams: dict[int, _LogStream]) -> list[tuple[logging.StreamHandler[TextIO], TextIO]]:
    """Point libraries' own console handlers (torch's, set up at import) at the log; returns what to restore."""
    moved = []
    loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)]
    for lib_logger in loggers:
        for handler in lib_logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in streams:
                moved.append((handler, handler.setStream(streams[id(handler.stream)])))  # type: ignore[arg-type]
    return [(handler, old) for handler, old in moved if old is not None]


# ---- the per-step line -----------------------------------------------------------------------------------
COMPONENT_SHORT = {"format": "fmt", "count": "cnt", "accuracy": "acc", "spatial": "sp"}
PHASE_SHORT = {"generate": "gen", "reward": "rew", "old_log_probs": "old", "ref_log_probs": "ref", "update": "upd"}
# The keys the step line reads (the e2e test checks a run logs them all).
STEP_LINE_KEYS = (
    "reward/overall/mean",
    "actor/kl_mean",
    "response/length/mean",
    "timing/step_s",
    "throughput/tokens_per_s",
)


def step_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """`step 3/40 reward 0.412 (fmt 1.00 cnt 0.80 acc 0.50 sp 0.31) kl 2.1e-03 len 212 | 14.2 s: gen 6.1 ...`."""
    parts = [f"step {step}/{total}"]
    if "reward/overall/mean" in metrics:
        components = " ".join(
            f"{short} {_fixed(metrics[f'reward/{name}/mean'])}"
            for name, short in COMPONENT_SHORT.items()
            if f"reward/{name}/mean" in metrics
        )
        parts.append(f"reward {_fixed(metrics['reward/overall/mean'], 3)}" + (f" ({components})" if components else ""))
    if "actor/kl_mean" in metrics:
        parts.append(f"kl {_sci(metrics['actor/kl_mean'])}")
    if "response/length/mean" in metrics:
        parts.append(f"len {metrics['response/length/mean']:.0f}")
    if "val/reward/overall/mean" in metrics:
        parts.append(f"val {_fixed(metrics['val/reward/overall/mean'], 3)}")
    line = " ".join(parts)
    if "timing/step_s" in metrics:
        phases = " ".join(
            f"{PHASE_SHORT.get(name, name)} {metrics[key]:.1f}"
            for key in metrics
            if key.startswith("timing/") and key != "timing/step_s" and (name := key[7:].removesuffix("_s"))
        )
        line += f" | {metrics['timing/step_s']:.1f} s" + (f": {phases}" if phases else "")
    if "throughput/tokens_per_s" in metrics:
        line += f" | {metrics['throughput/tokens_per_s']:.0f} tok/s"
    return line


def _fixed(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _sci(value: float) -> str:
    return f"{value:.1e}" if math.isfinite(value) else str(value)
