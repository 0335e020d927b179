"""Shared-memory files a generation server created, removed after it ended; never another process's.

vLLM's processes create POSIX shared memory (`/dev/shm/psm_*`, Python's SharedMemory) and semaphores
(`/dev/shm/sem.mp-*`, multiprocessing's); an engine killed before its resource tracker cleans up leaves them
(about one start in five after an abnormal end). Their names are random, so the only safe way to know which
are this run's is to see this run's server processes use them:

    tracker = ShmTracker(record_file)           # <generation log dir>/shm-files.txt
    tracker.observe(server_pid)                 # while it runs: what its process tree maps or holds open
    tracker.clean()                             # after it ended: unlink what it used that no live process uses

`observe` reads /proc/<pid>/maps and /proc/<pid>/fd of the server and every descendant (psutil) and adds what it
finds to the record file, so a trainer SIGKILLed before it could clean leaves the list to the next start in the
same run directory (`clean` runs before every start too). `clean` unlinks a recorded file only when no process
on the machine maps it or holds it open, so a name a live process still uses (this run's next server, another
run) is never touched. A segment created and leaked between two observations is missed; the server's
background observer runs every `interval_s` (2 s), and the weight-sync segments, which this package names and
removes itself (transport.py), are not in these patterns.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import threading
from pathlib import Path

import psutil

from nemo_spatial.fileio import atomic_write_text

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
PATTERNS = ("psm_*", "sem.mp-*")


def shm_names_used_by(pid: int) -> set[str]:
    """Names of /dev/shm files matching PATTERNS that `pid` maps or holds open (empty when it is gone)."""
    names: set[str] = set()
    prefix = f"{SHM_DIR}/"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)  # address perms offset dev inode [path]
            path = parts[5].strip() if len(parts) == 6 else ""
            if path.startswith(prefix):
                names.add(path[len(prefix) :].removesuffix(" (deleted)"))
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(prefix):
                    names.add(target[len(prefix) :])
    return {name for name in names if any(fnmatch.fnmatch(name, p) for p in PATTERNS)}


def process_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def names_in_use() -> set[str]:
    """Every matching /dev/shm name some process on this machine (that we may inspect) maps or holds open."""
    used: set[str] = set()
    for pid in psutil.pids():
        used |= shm_names_used_by(pid)
    return used


class ShmTracker:
    """The shared-memory files of one run's generation servers (see the module docstring)."""

    def __init__(self, record_file: str | Path, interval_s: float = 2.0) -> None:
        self.record_file = Path(record_file)
        self.interval_s = interval_s
        self.names: set[str] = self._read()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> set[str]:
        try:
            return {line.strip() for line in self.record_file.read_text().splitlines() if line.strip()}
        except OSError:
            return set()

    def observe(self, pid: int) -> None:
        found: set[str] = set()
        for member in process_tree(pid):
            found |= shm_names_used_by(member)
        with self._lock:
            if found - self.names:
                self.names |= found
                self.record_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.record_file, "".join(f"{name}\n" for name in sorted(self.names)))

    def watch(self, pid: int) -> None:
        """Observe `pid` in a daemon thread every `interval_s` until `stop_watching`."""
        self.stop_watching()
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.observe(pid)

        self._thread = threading.Thread(target=loop, name="shm-tracker", daemon=True)
        self._thread.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def clean(self) -> list[str]:
        """Unlink the recorded files that still exist and that no live process uses; returns their names."""
        with self._lock:
            leftovers = {name for name in self.names if (SHM_DIR / name).exists()}
            removed: list[str] = []
            if leftovers:
                busy = names_in_use()
                for name in sorted(leftovers - busy):
                    with contextlib.suppress(FileNotFoundError):
                        (SHM_DIR / name).unlink()
                        removed.append(name)
                if removed:
                    logger.warning(
                        "removed %d shared-memory file(s) a generation server left: %s", len(removed), removed
                    )
            self.names = {name for name in self.names if (SHM_DIR / name).exists()}
            self.record_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.record_file, "".join(f"{name}\n" for name in sorted(self.names)))
            return removed
