"""Preemption: SIGTERM / SIGUSR1 ask the trainer to checkpoint at the end of the current step and exit.

SLURM sends SIGTERM at the time limit or on preemption (and SIGUSR1 `--signal=USR1@<s>` seconds early when
asked to). Work in flight is not interrupted: the handler only sets a flag that the training loop reads
between steps, so a checkpoint is always of a whole step. A second signal while the first is pending
restores the default action, so an impatient user can still stop the job.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1; `requested` is read by the loop between steps."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def install(self) -> PreemptionFlag:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            logger.warning("second %s: stopping now without a checkpoint", name)
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.requested, self.signal_name = True, name
        logger.warning("%s received: will checkpoint after this step and exit", name)
