"""A child process that dies with its parent, even when the parent is SIGKILLed.

    die_with_parent(parent_pid)        # first thing in the child: Linux PR_SET_PDEATHSIG, else a watch thread

Used by the `--nproc N` launcher's ranks (parallel/launch.py) and by the process behind Megatron's checkpoint
write-results queue (models/qwen25_vl/write_queue.py); the generation server has its own graceful variant
(generation/watchdog.py: SIGTERM, so vLLM shuts its engine down). The kernel delivers PR_SET_PDEATHSIG when the
*thread* that created the child exits, so the parent must start such children from a thread that lives as long
as it does (the main thread, as both callers do). `parent_pid` closes the race of a parent that died before
the call: the child then stops at once. Without prctl (not Linux) a daemon thread polls the parent every second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> str:
    """Arrange for `sig` when the parent goes; returns how ("prctl" or "thread")."""
    how = "prctl" if _set_pdeathsig(sig) else "thread"
    if how == "thread":
        threading.Thread(target=_watch, args=(parent_pid, sig), name="die-with-parent", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent was already gone before the kernel watched it
        os.kill(os.getpid(), sig)
    return how


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os.kill(os.getpid(), sig)
