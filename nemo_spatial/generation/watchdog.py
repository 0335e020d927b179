"""Exit with the parent: a server the trainer spawned must not outlive a trainer that died.

The trainer starts the generation server in its own session (so a Ctrl-C in the trainer's terminal does not
hit the server mid-sync), which also means a SIGKILLed trainer would leave it running, holding its memory and,
on a cluster, its GPUs. `ServerProcess` passes its PID in NEMO_SPATIAL_PARENT_PID; the server then polls its
parent and sends itself SIGTERM (vLLM's graceful shutdown, engine processes included) once it has been
re-parented. A server started by hand or by SLURM has no such variable and no watchdog.
vLLM's graceful shutdown can hang with requests in flight (uvicorn "Waiting for background tasks to complete"
after the engine aborted them; seen after a SIGKILLed trainer), so after `grace_s` the watchdog SIGKILLs its
process group: the server is a session leader (ServerProcess starts it so), and the group is the server, its
engine core and workers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "NEMO_SPATIAL_PARENT_PID"


def exit_when_parent_dies(parent_pid: int, interval_s: float = 1.0, grace_s: float = 20.0) -> threading.Thread:
    """Start a daemon thread that SIGTERMs this process when its parent is no longer `parent_pid`, and SIGKILLs
    its process group (only when it leads one) if it is still alive `grace_s` later."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        logger.warning("parent process %d is gone: shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        logger.warning("still shutting down %.0f s after SIGTERM: killing the server's process group", grace_s)
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def watch_parent_from_env() -> None:
    """Start the watchdog when the spawning trainer asked for it through NEMO_SPATIAL_PARENT_PID."""
    value = os.environ.get(PARENT_PID_ENV, "")
    if value.isdigit():
        exit_when_parent_dies(int(value))
