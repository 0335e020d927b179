"""One run at a time in a run directory: `<run_dir>/.run.lock`, held for the life of the process that trains.

    lock = RunDirLock.acquire(run_dir)      # raises RunDirBusyError naming the holder (pid, host, start time)
    ...
    lock.release()                          # also released by the kernel when the holder dies, SIGKILL included
    with hold_run_dir(run_dir, rank):       # an entry point's form: rank 0 takes it (unless its launcher holds
        with run_console(run_dir, ...): ... # it), BEFORE anything writes into the directory (logs/ included)

Two trainers writing one run directory replace each other's checkpoints, config.yaml and run_info.json and
interleave metrics.jsonl. The lock is an advisory `flock` on the lock file: the kernel drops it when the
holding process exits in any way, so a crashed or killed run never leaves it stuck (a stale lock is one whose
holder is gone, and such a lock is simply free). The file also names the holder, for the second run's message;
its contents are rewritten by every new holder and mean nothing when the lock is free.

Who holds it: the process that owns the run (a `--nproc N` launcher, whose ranks die with it; rank 0 under
torchrun/srun). A launcher passes `RUN_LOCK_HELD_ENV` to its ranks so rank 0 does not try to take it again.
flock works on local filesystems and on NFSv4 / Lustre (emulated with POSIX locks there); a filesystem
without locking gives an error that says so rather than running unprotected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nemo_spatial.errors import UserError

LOCK_FILE = ".run.lock"
RUN_LOCK_HELD_ENV = "NEMO_SPATIAL_RUN_LOCK_HELD"


class RunDirBusyError(UserError):
    """Another live run owns this run directory."""


@dataclass
class RunDirLock:
    """A held lock on one run directory (the open file keeps it)."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunDirLock:
        """Take the run directory or raise RunDirBusyError naming the run that holds it."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirBusyError(busy_message(run_dir, read_holder(path))) from None
            raise OSError(
                error.errno,
                f"cannot lock {path} ({error.strerror}): the filesystem of run.output_dir does not support file "
                "locks; put run.output_dir on one that does",
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, object]:
    """What the lock file says about its holder ({} when it cannot be read: the holder is still writing it)."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def busy_message(run_dir: Path, holder: dict[str, object]) -> str:
    who = (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        if holder
        else "a process that is still starting"
    )
    return (
        f"the run directory {run_dir} is in use by another run ({who}); two runs in one directory would "
        "overwrite each other's checkpoints and metrics. Wait for it to end or stop it, or give this run "
        "another run.name or run.output_dir"
    )


def acquire_for_run(run_dir: str | Path) -> RunDirLock | None:
    """The lock for this process's run, or None when the launcher that started this rank already holds it."""
    if os.environ.get(RUN_LOCK_HELD_ENV, "") == str(os.getppid()):
        return None
    return RunDirLock.acquire(run_dir)


@contextmanager
def hold_run_dir(run_dir: str | Path, rank: int) -> Iterator[None]:
    """Hold the run directory for the block on rank 0 (`acquire_for_run`); the other ranks hold nothing.

    Entry points take it before they open the run console: a second run refused here has written nothing into
    the first one's directory (its logs/train.log included)."""
    lock = acquire_for_run(run_dir) if rank == 0 else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
