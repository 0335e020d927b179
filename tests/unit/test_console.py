"""The console's cases (console_cases.py) in a fresh interpreter.

`run_console` takes over process-wide state (sys.stdout/stderr, the root logger, warnings, the handlers that
libraries put on the terminal) the way a run's process starts. In the suite's one long-lived process,
earlier tests leave that state changed (an in-process vLLM engine and Megatron configure their own loggers),
so the cases run in a new Python process, as a run would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_console_cases_in_a_fresh_interpreter(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")]
    done = subprocess.run(
        [*command, str(HERE / "console_cases.py")],
        cwd=HERE.parents[1], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "\n8 passed" in done.stdout, done.stdout[-2000:]  # every case ran
