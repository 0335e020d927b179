"""How a run starts, for the GRPO (`nemo_spatial.train`) and the SFT (`nemo_spatial.sft`) entry points alike.

Under torchrun or SLURM's srun (RANK set), or with `--nproc 1`, this process is the run: it takes the run
directory's lock (rank 0), then opens the run console (logs/train.log) and runs. Started plainly with
`--nproc N > 1`, it runs the start-up checks (preflight) once, holds the lock itself and spawns N local ranks,
each rebuilding the config from its YAML. The lock is always taken before the console opens the run's log, so
a refused second run writes nothing into the first one's logs/.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from nemo_spatial.config import Config, build, to_yaml
from nemo_spatial.console import run_console
from nemo_spatial.preflight import preflight
from nemo_spatial.run_lock import RUN_LOCK_HELD_ENV, RunDirLock, hold_run_dir


def start_run[C: Config](cfg: C, nproc: int, verbose: bool, run: Callable[[C], None]) -> int:
    """Run `run(cfg)` in this process or on `nproc` spawned ranks (see the module docstring); the exit status."""
    if "RANK" in os.environ or nproc == 1:
        from nemo_spatial.parallel.launch import single_process_env

        single_process_env()
        rank = int(os.environ["RANK"])
        with hold_run_dir(cfg.run_dir, rank), run_console(cfg.run_dir, verbose, rank=rank):
            run(cfg)
        return 0
    preflight(cfg, nproc)
    from nemo_spatial.parallel.launch import spawn

    # The launcher owns the run directory (its ranks die with it); rank 0 sees it held by its parent.
    with RunDirLock.acquire(cfg.run_dir):
        spawn(
            _spawned_worker,
            nprocs=nproc,
            args=(type(cfg), run, to_yaml(cfg), verbose),
            env={RUN_LOCK_HELD_ENV: str(os.getpid())},
        )
    return 0


def _spawned_worker[C: Config](
    rank: int, schema: type[C], run: Callable[[C], None], cfg_yaml: str, verbose: bool = False
) -> None:
    from omegaconf import OmegaConf

    cfg = build(schema, [OmegaConf.create(cfg_yaml)])  # type: ignore[list-item]
    with hold_run_dir(cfg.run_dir, rank), run_console(cfg.run_dir, verbose, rank=rank):  # the launcher holds it
        run(cfg)
