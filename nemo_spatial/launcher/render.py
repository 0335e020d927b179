"""The sbatch script of one job: header, environment, then the components in order, watched.

Train job (one allocation, node ranges; the README says why not heterogeneous jobs):
1. the reward service on node 0 (reward_service.mode=remote) and every generation server, each its own
   background `srun --overlap` step on its node, a server's GPUs named by CUDA_VISIBLE_DEVICES;
2. wait until each answers its health check (a step that dies first fails the job with its log tail);
3. the trainer: one task per GPU on the trainer nodes (RANK/LOCAL_RANK/WORLD_SIZE from SLURM, MASTER_ADDR =
   node 0), given the servers' URLs and the reward service's URL as config overrides;
4. watch: a service that dies stops the job with its log tail; when the trainer ends, the services are stopped;
   a run stopped before its last step (the preemption signal's checkpoint) is requeued (`scontrol requeue`,
   at most launch.max_restarts times) and resumes from its newest checkpoint. Each restart logs into its own
   folder, restart_<SLURM_RESTART_COUNT>/.
Eval and export jobs are one step each.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from nemo_spatial.config import Config
from nemo_spatial.generation.process import server_command
from nemo_spatial.launcher.cluster import ClusterConfig
from nemo_spatial.launcher.plan import PORT_EXPRESSIONS, Plan

JOB_LIB = Path(__file__).with_name("job_lib.sh")
JOBS = ("train", "eval", "export")


@dataclass
class JobSpec:
    """What to render: the resolved configs, where the recipe is, and the user's overrides as given."""

    cfg: Config
    cluster: ClusterConfig
    plan: Plan
    recipe: str  # the recipe path as the job sees it (relative to the repository, or absolute)
    overrides: list[str] = field(default_factory=list)
    job: str = "train"
    job_args: list[str] = field(default_factory=list)

    @property
    def repo(self) -> Path:
        return self.cluster.repo()

    @property
    def log_root(self) -> Path:
        return self.repo / self.cluster.log_dir / self.cfg.run.name

    @property
    def run_dir(self) -> Path:
        return self.repo / self.cfg.run_dir  # an absolute run.output_dir stays as it is


def render(spec: JobSpec) -> str:
    """The whole script: `bash -n` clean, one step per component."""
    body = {"train": _train_body, "eval": _eval_body, "export": _export_body}[spec.job](spec)
    return "\n".join([*_header(spec), JOB_LIB.read_text(), *_prologue(spec), *body, ""])


def _header(spec: JobSpec) -> list[str]:
    cluster, plan = spec.cluster, spec.plan
    train = spec.job == "train"
    nodes = plan.nodes if train else 1
    lines = [
        "#!/bin/bash",
        f"# nemo-spatial {spec.job} job rendered by launcher/submit.py: {spec.recipe} on cluster {cluster.name}",
        f"#SBATCH --job-name={spec.cfg.run.name}-{spec.job}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={max(plan.trainer_tasks_per_node, 1) if train else 1}",
        f"#SBATCH --time={cluster.time_limit}",
        f"#SBATCH --mem={cluster.mem}",
        f"#SBATCH --output={spec.log_root}/sbatch-%j.log",
        "#SBATCH --open-mode=append",
    ]
    if cluster.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={cluster.gpus_per_node if train else _single_gpus(spec)}")
    for flag, value in (("account", cluster.account), ("partition", cluster.partition), ("qos", cluster.qos)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    if cluster.exclusive:
        lines.append("#SBATCH --exclusive")
    if train and cluster.requeue:
        lines.append("#SBATCH --requeue")
    if train:
        lines.append(f"#SBATCH --signal=USR1@{spec.cfg.launch.signal_lead_s}")
    lines += [f"#SBATCH {arg}" for arg in cluster.sbatch_args]
    return lines


def _single_gpus(spec: JobSpec) -> int:
    """GPUs of an eval (the vLLM engine's TP) or export (the policy's TP) job."""
    if spec.job == "eval":
        return spec.cfg.generation.tensor_parallel_size
    return spec.cfg.parallel.tensor_model_parallel_size


def _prologue(spec: JobSpec) -> list[str]:
    cluster, cfg = spec.cluster, spec.cfg
    lines = ["set -uo pipefail", *cluster.setup, f"cd {shlex.quote(str(spec.repo))}"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(cluster.env.items())]
    if cluster.bare_metal:
        lines.append(f"source {shlex.quote(cluster.venv)}/bin/activate")
    lines += [
        "RESTART=${SLURM_RESTART_COUNT:-0}",
        f"LOG_DIR={shlex.quote(str(spec.log_root))}/$SLURM_JOB_ID/restart_$RESTART",
        'mkdir -p "$LOG_DIR"',
        f"RUN_DIR={shlex.quote(str(spec.run_dir))}",
        f"TOTAL_STEPS={cfg.trainer.total_steps}",
        f"MAX_RESTARTS={cfg.launch.max_restarts}",
        'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "command -v curl >/dev/null || { echo 'error: curl is needed on the nodes (health checks)' >&2; exit 1; }",
    ]
    lines += [f"export {name}=$(({expression}))" for name, expression in PORT_EXPRESSIONS.items()]
    token = cfg.reward_service.token_env
    lines += [
        'MASTER_ADDR=$(node_addr "${NODES[0]}")',
        "export MASTER_ADDR",
        f"export {token}=${{{token}:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')}}  # job-scoped reward token",
        'echo "[job $SLURM_JOB_ID restart $RESTART] nodes: ${NODES[*]}; logs: $LOG_DIR"',
    ]
    return lines


def srun(spec: JobSpec, name: str, nodes: str, nnodes: int, tasks_per_node: int, extra: list[str]) -> list[str]:
    """An srun of one component: its nodes, its tasks, the container (or not), the cluster's srun flags."""
    args = [
        "srun",
        f"--nodes={nnodes}",
        f"--ntasks-per-node={tasks_per_node}",
        f'--nodelist="{nodes}"',
        "--overlap",
        "--kill-on-bad-exit=1",
        *extra,
    ]
    cluster = spec.cluster
    if not cluster.bare_metal:
        container = cluster.container
        repo = str(spec.repo)
        mounts = [f"{repo}:{repo}", *(m for m in container.mounts if m.split(":")[0] != repo)]
        args += [
            f"--container-image={shlex.quote(container.image)}",
            f"--container-mounts={shlex.quote(','.join(mounts))}",
            f"--container-workdir={shlex.quote(container.workdir or repo)}",
            f'--container-name="nemo-spatial-{name}-${{SLURM_JOB_ID}}-${{RESTART}}"',
        ]
        if not container.mount_home:
            args.append("--no-container-mount-home")
        if container.writable:
            args.append("--container-writable")
    return args + [shlex.quote(arg) for arg in cluster.srun_args]


def task_shell(spec: JobSpec, exports: str, ignore_usr1: bool) -> list[str]:
    """`bash -c '<per-task setup>; exec "$@"' NAME`: the task's own variables, then the command (its args)."""
    steps = ['trap "" USR1'] if ignore_usr1 else []  # an ignored signal stays ignored through exec
    if not spec.cluster.bare_metal and spec.cluster.venv:
        steps.append(f"source {shlex.quote(spec.cluster.venv)}/bin/activate")
    if exports:
        steps.append(f"export {exports}")
    steps.append('exec "$@"')
    return ["bash", "-c", shlex.quote("; ".join(steps)), "task"]


def _train_body(spec: JobSpec) -> list[str]:
    from nemo_spatial.launcher.train_steps import train_body

    return train_body(spec)


def _single_step(spec: JobSpec, name: str, command: list[str]) -> list[str]:
    groups = [srun(spec, name, "${NODES[0]}", 1, 1, []), task_shell(spec, "", False), command]
    return [
        f'srun_log="$LOG_DIR/{name}.log"',
        'echo "[$(stamp)] ' + name + ': $srun_log"',
        " \\\n  ".join(" ".join(group) for group in groups) + ' >>"$srun_log" 2>&1',
        "rc=$?",
        f'((rc == 0)) || {{ echo "error: {name} exited with code $rc" >&2; tail -n 40 "$srun_log" >&2; }}',
        "exit $rc",
    ]


def _eval_body(spec: JobSpec) -> list[str]:
    tp = spec.cfg.generation.tensor_parallel_size
    command = ["python", "-m", "nemo_spatial.eval", "--model", '"$RUN_DIR"', "--tensor-parallel-size", str(tp)]
    return _single_step(spec, "eval", command + [shlex.quote(arg) for arg in spec.job_args])


def _export_body(spec: JobSpec) -> list[str]:
    nproc = spec.cfg.parallel.tensor_model_parallel_size
    command = ["python", "tools/megatron_to_hf.py", "--checkpoint", '"$RUN_DIR"', "--nproc", str(nproc)]
    return _single_step(spec, "export", command + [shlex.quote(arg) for arg in spec.job_args])


def generation_command(spec: JobSpec, index: int) -> list[str]:
    """`python -m nemo_spatial.generation.serve ...` as the trainer would spawn it, on every interface."""
    cfg = spec.cfg.generation
    command = ["python", *server_command(cfg, spec.cfg.policy.hf_path, 0)[1:]]
    if spec.cluster.gpus_per_node and not cfg.kv_cache_gb and "--kv-cache-memory-bytes" in command:
        at = command.index("--kv-cache-memory-bytes")  # the CPU default; GPUs size it by gpu_memory_utilization
        del command[at : at + 2]
    command[command.index("--host") + 1] = "0.0.0.0"
    command[command.index("--port") + 1] = f"$((GEN_PORT_BASE + {index}))"
    return [arg if arg.startswith("$((") else shlex.quote(arg) for arg in command]
