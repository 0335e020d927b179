"""Exit with the parent: a server the trainer spawned must not outlive a trainer that died.

The trainer starts the generation server in its own session (so a Ctrl-C in the trainer's terminal does not
hit the server mid-sync), which also means a SIGKILLed trainer would leave it running, holding its memory and,
on a cluster, its GPUs. `ServerProcess` passes its PID in NEMO_SPATIAL_PARENT_PID; the server then polls its
parent and sends itself SIGTERM (vLLM's graceful shutdown, engine processes included) once it has been
re-parented. A server started by hand or by SLURM has no such variable and no watchdog.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "NEMO_SPATIAL_PARENT_PID"


def exit_when_parent_dies(parent_pid: int, interval_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that SIGTERMs this process when its parent is no longer `parent_pid`."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        logger.warning("parent process %d is gone: shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def watch_parent_from_env() -> None:
    """Start the watchdog when the spawning trainer asked for it through NEMO_SPATIAL_PARENT_PID."""
    value = os.environ.get(PARENT_PID_ENV, "")
    if value.isdigit():
        exit_when_parent_dies(int(value))
