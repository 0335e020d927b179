"""tests/conftest.py's watchdog hook: a test's own `timeout` mark, not the session-wide faulthandler_timeout,
decides when faulthandler's C watchdog ends the run (the demo test runs past the session-wide 960 s in CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
CASES = """
import time
import pytest

@pytest.mark.timeout(30)
def test_marked_runs_past_the_session_watchdog():
    time.sleep(3)

@pytest.mark.timeout(timeout=30)
def test_marked_by_keyword_too():
    time.sleep(3)

def test_unmarked_is_ended_by_it():
    time.sleep(3)
"""


def _pytest(directory: Path, test: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_cases.py::{test}"]
    watchdog = ["-o", "faulthandler_timeout=1", "-o", "faulthandler_exit_on_timeout=true", "-o", "timeout=30"]
    return subprocess.run([*command, *watchdog], cwd=directory, capture_output=True, text=True, timeout=120)


def test_the_watchdog_follows_a_tests_timeout_mark(tmp_path):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    for test in ("test_marked_runs_past_the_session_watchdog", "test_marked_by_keyword_too"):
        marked = _pytest(tmp_path, test)
        assert marked.returncode == 0, marked.stdout + marked.stderr
    unmarked = _pytest(tmp_path, "test_unmarked_is_ended_by_it")  # the session-wide 1 s still holds without a mark
    assert unmarked.returncode != 0 and "Timeout" in unmarked.stdout + unmarked.stderr, unmarked.stdout
