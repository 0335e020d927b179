"""Writes that never leave a half-written file or folder that looks complete.

    with atomic_write(path) as handle:          # text ("w") or binary ("wb")
        handle.write(...)
    atomic_write_text(path, text)
    with staged_directory(final) as staging:     # fill `staging`; it becomes `final` only when the block ends
        ...

The data goes to a temporary sibling (same folder, so the final rename is atomic on POSIX filesystems) whose
name carries the process id, is flushed and fsynced, and is renamed over the target at the end. An exception
(or a kill) leaves the target as it was: the old file, or nothing. Temporary siblings of a killed process are
named `<name>.tmp-<pid>` so that a later run can recognise and remove them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def staging_name(path: Path) -> Path:
    """The temporary sibling of `path` this process writes first."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    staging = staging_name(target)
    handle = open(staging, mode, encoding=None if "b" in mode else encoding)  # noqa: SIM115 - closed below
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(staging, target)
    except BaseException:
        handle.close()
        staging.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


@contextmanager
def staged_directory(final: str | Path) -> Iterator[Path]:
    """A fresh staging folder beside `final`, renamed to `final` when the block succeeds (removed if it fails).

    `final` must not exist yet (a directory rename cannot replace a non-empty directory atomically).
    """
    target = Path(final)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    staging = staging_name(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
