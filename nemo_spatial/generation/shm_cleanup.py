"""Shared-memory files a generation server created, removed after it ended; never another process's.

vLLM's processes create POSIX shared memory (`/dev/shm/psm_*`, Python's SharedMemory) and semaphores
(`/dev/shm/sem.mp-*`, multiprocessing's); an engine killed before its resource tracker cleans up leaves them
(about one start in five after an abnormal end). Their names are random, so the only safe way to know which
are this run's is to see this run's server processes use them:

    tracker = ShmTracker(record_file)           # <generation log dir>/shm-files.txt
    tracker.observe(server_pid)                 # while it runs: what its process tree maps or holds open
    tracker.clean()                             # after it ended: unlink what it used that no live process uses

`observe` reads /proc/<pid>/maps and /proc/<pid>/fd of the server and every descendant (psutil), matches
the inodes found there to the names in /dev/shm (by inode: glibc maps a semaphore under a temporary name) and
adds them, name and inode, to the record file, so a trainer SIGKILLed before it could clean leaves the list to
the next start in the same run directory (`clean` runs before every start too). `clean` unlinks a recorded
file only when it is still the same file (name and inode) and no process on the machine maps it or holds it
open, so a file a live process uses (this run's next server, another run) is never touched, nor one this
run's servers were never seen using. A segment created and leaked between two observations is missed; the
observer runs every `interval_s` (2 s) while the server lives, and once more when it is stopped.
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


def shm_inodes_used_by(pid: int) -> set[int]:
    """Inodes of /dev/shm files that `pid` maps or holds open (empty when it is gone or not ours to read).

    By inode, not by name: glibc creates a named semaphore under a temporary name, maps it, links it to
    `sem.<name>` and unlinks the temporary one, so the mapping reads `/dev/shm/sem.XXXXXX (deleted)`.
    """
    inodes: set[int] = set()
    prefix = f"{SHM_DIR}/"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)  # address perms offset dev inode [path]
            if len(parts) == 6 and parts[5].startswith(prefix):
                inodes.add(int(parts[4]))
    shm_dev = _shm_device()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                info = os.stat(f"/proc/{pid}/fd/{fd}")
                if info.st_dev == shm_dev:
                    inodes.add(info.st_ino)
    return inodes


def _shm_device() -> int:
    try:
        return os.stat(SHM_DIR).st_dev
    except OSError:
        return -1


def shm_files() -> dict[str, int]:
    """name -> inode of every /dev/shm file matching PATTERNS."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(SHM_DIR):
            if any(fnmatch.fnmatch(entry.name, p) for p in PATTERNS):
                with contextlib.suppress(OSError):
                    found[entry.name] = entry.inode()
    return found


def process_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


def inodes_in_use() -> set[int]:
    """Every /dev/shm inode some process on this machine (that we may inspect) maps or holds open."""
    used: set[int] = set()
    for pid in psutil.pids():
        used |= shm_inodes_used_by(pid)
    return used


class ShmTracker:
    """The shared-memory files of one run's generation servers (see the module docstring)."""

    def __init__(self, record_file: str | Path, interval_s: float = 2.0) -> None:
        self.record_file = Path(record_file)
        self.interval_s = interval_s
        self.files: dict[str, int] = self._read()  # name -> inode, as seen used by the server
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> set[str]:
        return set(self.files)

    def _read(self) -> dict[str, int]:
        files: dict[str, int] = {}
        try:
            for line in self.record_file.read_text().splitlines():
                name, _, inode = line.partition(" ")
                if name and inode.isdigit():
                    files[name] = int(inode)
        except OSError:
            pass
        return files

    def _write(self) -> None:
        self.record_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.record_file, "".join(f"{name} {inode}\n" for name, inode in sorted(self.files.items())))

    def observe(self, pid: int) -> None:
        used: set[int] = set()
        for member in process_tree(pid):
            used |= shm_inodes_used_by(member)
        found = {name: inode for name, inode in shm_files().items() if inode in used}
        with self._lock:
            if found.items() - self.files.items():
                self.files.update(found)
                self._write()

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
        """Unlink the recorded files still there (same name and inode) that no live process uses; their names."""
        with self._lock:
            present = shm_files()
            leftovers = {name for name, inode in self.files.items() if present.get(name) == inode}
            removed: list[str] = []
            if leftovers:
                busy = inodes_in_use()
                for name in sorted(name for name in leftovers if self.files[name] not in busy):
                    with contextlib.suppress(FileNotFoundError):
                        (SHM_DIR / name).unlink()
                        removed.append(name)
                if removed:
                    logger.warning(
                        "removed %d shared-memory file(s) a generation server left: %s", len(removed), removed
                    )
            self.files = {
                name: inode for name, inode in self.files.items() if name in leftovers and name not in removed
            }
            self._write()
            return removed
