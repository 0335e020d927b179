"""Cluster files (`conf/cluster/*.yaml`): where and how a job runs, apart from what it runs.

Loaded with the project's config machinery (`nemo_spatial.config.build`): unknown keys are errors naming the
nearest valid key, wrong types name the key. A file may extend another with `_base_:`. Two modes:
- containers (default): every step runs in `container.image` through pyxis (`--container-image`, mounts,
  `--no-container-mount-home`, a container name scoped to the job and restart). The repository is mounted
  at its own path, so every path (run directory, logs) means the same inside and outside the container.
- `bare_metal: true`: no container; `venv` (a virtual environment on a shared filesystem) is activated.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nemo_spatial.errors import ConfigError

TIME_LIMIT = re.compile(r"(\d+-)?\d+:\d\d:\d\d|\d+")


@dataclass
class ContainerConfig:
    image: str = ""  # enroot URI (nvcr.io#nvidia/nemo:26.08) or a .sqsh path; required unless bare_metal
    mounts: list[str] = field(default_factory=list)  # SRC:DST[:FLAGS]; the repository is added at its own path
    workdir: str = ""  # empty: the repository's path (mounted at the same path)
    mount_home: bool = False  # false: --no-container-mount-home (keeps host ~/.cache and pip config out)
    writable: bool = True  # --container-writable (pip caches, /tmp inside the container)


@dataclass
class ClusterConfig:
    name: str = "cluster"
    account: str = ""
    partition: str = ""
    qos: str = ""
    gpus_per_node: int = 8
    cpus_per_node: int = 0  # 0: whatever the node has (informational; reward CPUs are checked against it)
    mem: str = "0"  # --mem per node; "0": all of it
    time_limit: str = "04:00:00"  # --time, [D-]HH:MM:SS
    exclusive: bool = True
    requeue: bool = True  # --requeue: a preempted or failed-node job goes back to the queue
    bare_metal: bool = False
    venv: str = ""  # bare_metal: the virtual environment to activate (on a filesystem every node sees)
    repo_dir: str = ""  # the repository on the shared filesystem; empty: where submit.py runs from
    log_dir: str = "outputs/slurm"  # relative to repo_dir; one folder per job, one per restart inside
    env: dict[str, str] = field(default_factory=dict)  # exported for every step (NCCL_*, HF_HOME, WANDB_*)
    setup: list[str] = field(default_factory=list)  # shell lines run first in the batch script (module load ...)
    sbatch_args: list[str] = field(default_factory=list)  # extra #SBATCH lines, e.g. --constraint=h100
    srun_args: list[str] = field(default_factory=list)  # extra flags for every srun, e.g. --mpi=pmix
    container: ContainerConfig = field(default_factory=ContainerConfig)

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0 or self.cpus_per_node < 0:
            raise ConfigError("cluster gpus_per_node and cpus_per_node must be >= 0")
        if self.bare_metal and not self.venv:
            raise ConfigError("cluster bare_metal=true needs venv: the virtual environment to activate on the nodes")
        if not self.bare_metal and not self.container.image:
            raise ConfigError(
                "cluster container.image is empty: name the image (e.g. container.image=nvcr.io#nvidia/nemo:26.08 "
                "or a .sqsh built from the Dockerfile), or set bare_metal=true with a venv"
            )
        if not TIME_LIMIT.fullmatch(self.time_limit):
            raise ConfigError(f"cluster time_limit={self.time_limit!r} must look like HH:MM:SS, D-HH:MM:SS or MINUTES")
        for key in self.env:
            if not key.replace("_", "").isalnum() or key[0].isdigit():
                raise ConfigError(f"cluster env key {key!r} is not a shell variable name")

    @property
    def time_limit_s(self) -> int:
        """--time in seconds."""
        if self.time_limit.isdigit():
            return int(self.time_limit) * 60
        days, _, clock = self.time_limit.rpartition("-")
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds

    def repo(self) -> Path:
        return Path(self.repo_dir or os.getcwd()).resolve()


def load_cluster(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ClusterConfig:
    """The cluster file (with its `_base_` files), then `cluster.KEY=value` overrides (the prefix stripped)."""
    from nemo_spatial.config import _load_yaml_with_bases, _parse_overrides, build

    layers: list[DictConfig] = [_load_yaml_with_bases(Path(path))]
    if overrides:
        layers.append(_parse_overrides(overrides))
    try:
        return build(ClusterConfig, layers)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def cluster_yaml(cluster: ClusterConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cluster))
