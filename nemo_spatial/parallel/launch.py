"""Run a function on N local processes that form one torch.distributed world on 127.0.0.1 (tests, CPU runs).

    results = spawn(worker, nprocs=2, args=(config_dict,))   # worker(rank, *args) -> picklable result

Each process gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT in its environment
(what torchrun would set), so `nemo_spatial.parallel.state.initialize` works unchanged; returns the workers'
results in rank order. A worker's exception is re-raised here with the rank and its traceback. Processes are
started with the "spawn" method (a fresh interpreter: no forked locks or CUDA state), so `worker` must be
importable at module level and the calling script needs an `if __name__ == "__main__":` guard.
SIGTERM and SIGUSR1 sent to this (parent) process are passed on to every worker, so that a local multi-process
run checkpoints on them as a torchrun/srun one does (the trainer's preemption handling lives in the workers).
A worker dies with this process (SIGKILL, through nemo_spatial.lifetime), so a killed launcher leaves no rank
training on; the last checkpoint stays as it was. A worker's UserError is raised here as a UserError (one line,
with its rank) rather than as a traceback of the spawn machinery.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from nemo_spatial.errors import UserError
from nemo_spatial.lifetime import die_with_parent
from nemo_spatial.net import free_port

LAUNCHER_PID_ENV = "NEMO_SPATIAL_LAUNCHER_PID"


def single_process_env() -> None:
    """A plainly started one-process run: the torch.distributed variables torchrun/srun would set (kept when set)."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())


def spawn(
    worker: Callable[..., Any],
    nprocs: int,
    args: tuple[Any, ...] = (),
    threads_per_process: int | None = None,
    env: dict[str, str] | None = None,
) -> list[Any]:
    """worker(rank, *args) on `nprocs` processes of one world; their return values in rank order."""
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nprocs)
    with tempfile.TemporaryDirectory(prefix="nemo-spatial-spawn-") as tmp:
        launch_env = {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(nprocs),
            "OMP_NUM_THREADS": str(threads),
            LAUNCHER_PID_ENV: str(os.getpid()),
            **(env or {}),
        }
        context = mp.start_processes(
            _run_worker,
            args=(worker, args, launch_env, threads, tmp),
            nprocs=nprocs,
            join=False,
            start_method="spawn",
        )
        with forwarding_signals(context.pids(), (signal.SIGTERM, signal.SIGUSR1)):
            try:
                while not context.join():  # raises with the rank and traceback when a worker fails
                    pass
            except mp.ProcessRaisedException as error:
                user_errors = sorted(Path(tmp).glob("rank*.user_error"))
                if user_errors:
                    raise UserError(user_errors[0].read_text()) from error
                raise
        return [torch.load(Path(tmp) / f"rank{rank}.pt", weights_only=False) for rank in range(nprocs)]


@contextlib.contextmanager
def forwarding_signals(pids: list[int], signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    """While inside, each of `signals` received here is sent on to every process in `pids` (and not acted on here)."""

    def forward(signum: int, frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_worker(
    rank: int, worker: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str], threads: int, out_dir: str
) -> None:
    die_with_parent(int(env[LAUNCHER_PID_ENV]))
    os.environ.update(env)
    os.environ["RANK"] = os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(threads)
    try:
        result = worker(rank, *args)
    except UserError as error:
        (Path(out_dir) / f"rank{rank}.user_error").write_text(f"rank {rank}: {error}")
        raise
    finally:
        _destroy_quietly()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _destroy_quietly() -> None:
    from nemo_spatial.parallel.state import destroy

    destroy()
