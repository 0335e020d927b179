"""Megatron's checkpoint write-results queue, served by a process that dies with this rank.

Megatron-Core's torch_dist writer (dist_checkpointing/strategies/filesystem_async.py) collects write results
through `mp.get_context("spawn").Manager().Queue()`, created at the first save and kept in a module global: a
~640 MB server process (a fresh interpreter that imports what the trainer imported) and, through it, this
rank's multiprocessing resource tracker. When the rank dies without running its exit handlers (SIGKILL, a
second SIGTERM, or torch terminating it after a peer rank died) both are re-parented to init and live on.

`install_write_results_queue()` puts a queue from our own `SyncManager` into that global before Megatron makes
one: the same kind of queue (what Megatron's writers put in and read is unchanged), but its server process
calls `nemo_spatial.lifetime.die_with_parent` first, so it ends with the rank; the tracker then sees its pipe
close and exits too. It is started from the calling thread (the trainer's main thread, where saves run),
which PR_SET_PDEATHSIG requires to outlive it. A normal exit shuts it down as before (multiprocessing's
finalizer). nvidia-resiliency-ext's copy of the writer, when installed, gets the same queue.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from multiprocessing.managers import SyncManager
from typing import Any

from nemo_spatial.lifetime import die_with_parent

WRITER_MODULES = (
    "megatron.core.dist_checkpointing.strategies.filesystem_async",
    "nvidia_resiliency_ext.checkpointing.async_ckpt.filesystem_async",
)
_manager: SyncManager | None = None


def install_write_results_queue() -> Any:
    """The write-results queue, created once per process by a manager that dies with this process."""
    global _manager
    modules: list[Any] = []
    for name in WRITER_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    if _manager is None:
        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
        _manager = manager
        queue = manager.Queue()
        for module in modules:
            if getattr(module, "_results_queue", None) is None:
                module._results_queue = queue  # the global get_write_results_queue() returns
    return next((q for q in (getattr(m, "_results_queue", None) for m in modules) if q is not None), None)


def manager_pid() -> int | None:
    """The pid of the manager's process (tests), None before the first save."""
    return None if _manager is None else _manager._process.pid  # type: ignore[attr-defined]
