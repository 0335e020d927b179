"""`launch:` config section: how a recipe is placed on a SLURM allocation and how it survives preemption.

Read only by `launcher/submit.py` (the trainer ignores it). The first `trainer_nodes` nodes of the allocation
run the trainer ranks (one task per GPU); `generation_servers` vLLM servers (generation.tensor_parallel_size
GPUs each) fill the remaining nodes, or the GPUs the trainer leaves free on its own node; 0 servers means
the trainer spawns its own (generation.url empty, as on one machine). The reward service runs on node 0 with
`reward_cpus` CPUs when reward_service.mode=remote.

The early-warning signal (`--signal=USR1@S`) must leave time for the step in flight and the checkpoint:
S = ceil(signal_safety x (step_time_s + save_time_s)) + signal_margin_s, the recipe's own estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nemo_spatial.errors import ConfigError

SLURM_MAX_SIGNAL_S = 65535  # --signal's @seconds is 16 bits


@dataclass
class LaunchConfig:
    nodes: int = 1
    trainer_nodes: int = 1  # the first nodes; the rest hold generation servers
    trainer_gpus_per_node: int = 0  # 0: every GPU of a trainer node that no server takes
    generation_servers: int = 0  # vLLM servers started by the job; 0: the trainer spawns its own
    reward_cpus: int = 4  # CPUs (scoring processes) of the reward service when reward_service.mode=remote
    startup_timeout_s: float = 1800.0  # how long the job waits for every server's health check
    step_time_s: float = 600.0  # the recipe's expected seconds per training step (for the signal lead)
    save_time_s: float = 120.0  # expected seconds per checkpoint save
    signal_safety: float = 1.25  # factor on step + save
    signal_margin_s: int = 60  # fixed seconds on top (stopping the servers, filesystem flush)
    max_restarts: int = 5  # requeues after a preemption checkpoint before the job gives up
    chain: int = 0  # extra jobs queued after this one (afterany), each resuming the run

    def __post_init__(self) -> None:
        for name in ("nodes", "trainer_nodes", "reward_cpus"):
            if getattr(self, name) < 1:
                raise ConfigError(f"launch.{name}={getattr(self, name)} must be >= 1")
        for name in ("trainer_gpus_per_node", "generation_servers", "max_restarts", "chain", "signal_margin_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"launch.{name}={getattr(self, name)} must be >= 0")
        if self.trainer_nodes > self.nodes:
            raise ConfigError(
                f"launch.trainer_nodes={self.trainer_nodes} exceeds launch.nodes={self.nodes}; "
                "raise launch.nodes or lower launch.trainer_nodes"
            )
        if self.nodes > self.trainer_nodes and self.generation_servers == 0:
            raise ConfigError(
                f"launch.nodes={self.nodes} leaves {self.nodes - self.trainer_nodes} node(s) for generation but "
                "launch.generation_servers=0; set launch.generation_servers or launch.nodes=launch.trainer_nodes"
            )
        for name in ("startup_timeout_s", "step_time_s", "save_time_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"launch.{name}={getattr(self, name)} must be > 0 seconds")
        if self.signal_safety < 1:
            raise ConfigError(f"launch.signal_safety={self.signal_safety} must be >= 1")
        if self.signal_lead_s > SLURM_MAX_SIGNAL_S:
            raise ConfigError(
                f"the signal lead {self.signal_lead_s} s (launch.step_time_s + launch.save_time_s) exceeds SLURM's "
                f"limit of {SLURM_MAX_SIGNAL_S} s for --signal; lower the estimates"
            )

    @property
    def signal_lead_s(self) -> int:
        """Seconds before the time limit that SIGUSR1 arrives: a whole step and a save, with margin."""
        return math.ceil(self.signal_safety * (self.step_time_s + self.save_time_s)) + self.signal_margin_s
