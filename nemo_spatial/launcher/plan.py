"""Placement: which node and which GPUs each component of a run gets, from the recipe and the cluster file.

Nodes are indices into the allocation's node list (`scontrol show hostnames`, resolved in the job). The
trainer holds the first `launch.trainer_nodes` nodes, one task per GPU (`trainer_gpus`, the same local ids on
each). Generation servers take `generation.tensor_parallel_size` GPUs each, filling the other nodes in order,
or, when there are none, the GPUs the trainer leaves free on its nodes. Each server step is given its GPUs
through CUDA_VISIBLE_DEVICES, so two components never share a GPU. On a CPU cluster (gpus_per_node=0) every
component is one task and no GPU is named. Ports come from fixed bands below the ephemeral range
(container-slurm.md 4.6), offset by the job id so that two jobs sharing a node do not collide.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_spatial.config import Config
from nemo_spatial.errors import ConfigError
from nemo_spatial.launcher.cluster import ClusterConfig

# Bash expressions of $SLURM_JOB_ID: torch's MASTER_PORT and the NCCL weight-sync rendezvous (1400-1999),
# generation HTTP (3000-4999, 10 per job), vLLM's internal VLLM_PORT (7000-8999, 10 per server), the reward
# service (5000-5999).
PORT_EXPRESSIONS = {
    "MASTER_PORT": "1400 + (SLURM_JOB_ID % 300) * 2",
    "NCCL_PORT": "1401 + (SLURM_JOB_ID % 300) * 2",
    "GEN_PORT_BASE": "3000 + (SLURM_JOB_ID % 200) * 10",
    "VLLM_PORT_BASE": "7000 + (SLURM_JOB_ID % 20) * 100",
    "REWARD_PORT": "5000 + SLURM_JOB_ID % 1000",
}
MAX_SERVERS = 10  # servers a job can address inside its band of generation ports


@dataclass(frozen=True)
class ServerSlot:
    index: int
    node: int
    gpus: tuple[int, ...]  # local GPU ids; () on CPU


@dataclass(frozen=True)
class Plan:
    nodes: int
    gpus_per_node: int
    trainer_nodes: int
    trainer_gpus: tuple[int, ...]  # local GPU ids of the trainer's tasks on each trainer node; () on CPU
    servers: tuple[ServerSlot, ...]
    reward_service: bool  # the job starts the reward service on node 0
    reward_cpus: int

    @property
    def trainer_tasks_per_node(self) -> int:
        return len(self.trainer_gpus) or 1

    @property
    def world_size(self) -> int:
        return self.trainer_nodes * self.trainer_tasks_per_node

    @property
    def cross_node(self) -> bool:
        """A server on a host other than the trainer's driver: weights go over NCCL, not /dev/shm."""
        return any(server.node != 0 for server in self.servers)


def make_plan(cfg: Config, cluster: ClusterConfig, check: bool = True) -> Plan:
    """The train job's placement; `check=False` (eval and export jobs, one step each) skips its checks."""
    launch, gpus = cfg.launch, cluster.gpus_per_node
    external = bool(cfg.generation.url or cfg.generation.urls)
    count = 0 if external else launch.generation_servers
    if external and launch.generation_servers:
        raise ConfigError(
            "generation.url/urls name running servers and launch.generation_servers asks the job to start "
            f"{launch.generation_servers}; set one of them (launch.generation_servers=0 to use the given servers)"
        )
    if count > MAX_SERVERS:
        raise ConfigError(f"launch.generation_servers={count}: at most {MAX_SERVERS} per job (its port band)")
    if gpus == 0:
        trainer_gpus: tuple[int, ...] = ()
        gen_nodes = list(range(launch.trainer_nodes, launch.nodes)) or [0]
        servers = tuple(ServerSlot(i, gen_nodes[i % len(gen_nodes)], ()) for i in range(count))
    else:
        trainer_gpus, servers = _gpu_layout(cfg, cluster, count)
    plan = Plan(
        nodes=launch.nodes,
        gpus_per_node=gpus,
        trainer_nodes=launch.trainer_nodes,
        trainer_gpus=trainer_gpus,
        servers=servers,
        reward_service=cfg.reward_service.mode == "remote",
        reward_cpus=launch.reward_cpus,
    )
    if check:
        _check(cfg, cluster, plan, external)
    return plan


def _gpu_layout(cfg: Config, cluster: ClusterConfig, count: int) -> tuple[tuple[int, ...], tuple[ServerSlot, ...]]:
    launch, gpus, tp = cfg.launch, cluster.gpus_per_node, cfg.generation.tensor_parallel_size
    gen_nodes = launch.nodes - launch.trainer_nodes
    if gen_nodes:
        trainer_count = launch.trainer_gpus_per_node or gpus
        free = {node: list(range(gpus)) for node in range(launch.trainer_nodes, launch.nodes)}
    else:
        trainer_count = launch.trainer_gpus_per_node or gpus - count * tp
        free = {node: list(range(trainer_count, gpus)) for node in range(launch.trainer_nodes)}
    if not 1 <= trainer_count <= gpus:
        raise ConfigError(
            f"the trainer gets {trainer_count} GPU(s) of a {gpus}-GPU node (launch.trainer_gpus_per_node="
            f"{launch.trainer_gpus_per_node}, {count} server(s) x generation.tensor_parallel_size={tp}); "
            "give the servers nodes of their own (launch.nodes) or fewer GPUs"
        )
    servers: list[ServerSlot] = []
    per_node = -(-count // max(1, len(free)))  # spread evenly over the generation nodes
    for node, ids in free.items():
        for _ in range(per_node):
            if len(servers) == count or len(ids) < tp:
                break
            servers.append(ServerSlot(len(servers), node, tuple(ids[:tp])))
            del ids[:tp]
    if len(servers) < count:
        raise ConfigError(
            f"launch.generation_servers={count} servers of generation.tensor_parallel_size={tp} GPUs do not fit "
            f"the {sum(len(ids) for ids in free.values()) + len(servers) * tp} free GPUs; lower the count, or "
            "raise launch.nodes"
        )
    return tuple(range(trainer_count)), tuple(servers)


def _check(cfg: Config, cluster: ClusterConfig, plan: Plan, external: bool) -> None:
    model_parallel = cfg.parallel.model_parallel_size
    if plan.world_size % model_parallel:
        raise ConfigError(
            f"the trainer has {plan.world_size} rank(s) ({plan.trainer_nodes} node(s) x "
            f"{plan.trainer_tasks_per_node}), which TP x PP x CP = {model_parallel} does not divide; change "
            "launch.trainer_gpus_per_node or the parallel sizes"
        )
    if cfg.generation.placement == "colocated" and (plan.servers or external):
        raise ConfigError(
            "generation.placement=colocated: the trainer spawns its servers on its own GPUs and puts them to sleep "
            "between phases, so the job must not start them; set launch.generation_servers=0 and clear "
            "generation.url(s), or use generation.placement=apart"
        )
    if cluster.gpus_per_node and not plan.servers and not external and cfg.generation.placement != "colocated":
        raise ConfigError(
            "launch.generation_servers=0 on a GPU cluster: a server the trainer spawns would share rank 0's GPU; "
            "set launch.generation_servers>=1 (the job gives each its own GPUs) or generation.url(s)"
        )
    if cluster.cpus_per_node and plan.reward_service and plan.reward_cpus > cluster.cpus_per_node:
        raise ConfigError(
            f"launch.reward_cpus={plan.reward_cpus} exceeds the cluster's cpus_per_node={cluster.cpus_per_node}"
        )
    lead = cfg.launch.signal_lead_s
    if lead >= cluster.time_limit_s:
        raise ConfigError(
            f"the preemption signal would come {lead} s before the time limit, but the limit "
            f"(time_limit={cluster.time_limit}) is {cluster.time_limit_s} s: raise the cluster's time_limit or lower "
            "launch.step_time_s / launch.save_time_s"
        )
