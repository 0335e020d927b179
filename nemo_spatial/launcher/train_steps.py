"""The train job's body: services first, their health checks, then the trainer, watched to the end.

Kept apart from render.py (the header, the prologue and the one-step jobs) to keep both files small; see
render.py's docstring for the order and why.
"""

from __future__ import annotations

import shlex

from nemo_spatial.launcher.render import JobSpec, generation_command, srun, task_shell


def train_body(spec: JobSpec) -> list[str]:
    lines = [
        "if (($(checkpoint_step) >= TOTAL_STEPS)); then",
        '  echo "[$(stamp)] $RUN_DIR already holds step $TOTAL_STEPS: nothing to do"; exit 0',
        "fi",
    ]
    lines += _services(spec)
    lines += _trainer(spec)
    lines += _watch()
    return lines


def _services(spec: JobSpec) -> list[str]:
    plan, cfg = spec.plan, spec.cfg
    lines: list[str] = []
    waits: list[str] = []
    if plan.reward_service:
        workers = f"reward_service.server.workers={plan.reward_cpus}"
        command = ["python", "-m", "nemo_spatial.reward.serve", "--config", shlex.quote(spec.recipe)]
        command += ["--host", "0.0.0.0", "--port", '"$REWARD_PORT"', *map(shlex.quote, spec.overrides), workers]
        step = srun(spec, "reward", "${NODES[0]}", 1, 1, [f"--cpus-per-task={plan.reward_cpus}"])
        lines += [
            'REWARD_ADDR=$(node_addr "${NODES[0]}")',
            _start("reward", step, task_shell(spec, "CUDA_VISIBLE_DEVICES=", True), command),
        ]
        waits.append('wait_healthy 0 "http://$REWARD_ADDR:$REWARD_PORT/v2/health/ready" "$STARTUP_TIMEOUT_S"')
    for server in plan.servers:
        name = f"generation_{server.index}"
        exports = f"VLLM_PORT={_vllm_port(server.index)}"
        if plan.gpus_per_node:
            exports = f"CUDA_VISIBLE_DEVICES={','.join(map(str, server.gpus))} {exports}"
        step = srun(spec, name, f"${{NODES[{server.node}]}}", 1, 1, [])
        lines += [
            f'GEN_ADDR_{server.index}=$(node_addr "${{NODES[{server.node}]}}")',
            _start(name, step, task_shell(spec, exports, True), generation_command(spec, server.index)),
        ]
        index = len(waits)
        url = f"http://$GEN_ADDR_{server.index}:$((GEN_PORT_BASE + {server.index}))/nemo/v1/health"
        waits.append(f'wait_healthy {index} "{url}" "$STARTUP_TIMEOUT_S"')
    timeout = int(max(cfg.launch.startup_timeout_s, 1))
    return [f"STARTUP_TIMEOUT_S={timeout}", *lines, *waits]


def _vllm_port(index: int) -> str:
    return f"$((VLLM_PORT_BASE + {index * 10}))"


def _start(name: str, *groups: list[str]) -> str:
    """`start_step NAME LOG srun... bash -c ... command...`, one line per group of arguments."""
    return f'start_step {name} "$LOG_DIR/{name}.log" \\\n  ' + " \\\n  ".join(" ".join(g) for g in groups)


def trainer_overrides(spec: JobSpec) -> list[str]:
    """The overrides the job adds for the trainer: servers' URLs, the NCCL rendezvous, the reward URL."""
    plan = spec.plan
    urls = [f"http://$GEN_ADDR_{s.index}:$((GEN_PORT_BASE + {s.index}))" for s in plan.servers]
    extra: list[str] = []
    if len(urls) == 1:
        extra.append(f"generation.url={urls[0]}")
    elif urls:
        extra.append(f"generation.urls=[{','.join(urls)}]")
    # NCCL when a server is on another node, or when the recipe asks for it (its servers are then reached at
    # their node's address, not loopback, and the trainer's config wants the rendezvous address too).
    if urls and (plan.cross_node or spec.cfg.generation.transport == "nccl"):
        extra += ["generation.transport=nccl", "generation.nccl_master_address=$MASTER_ADDR"]
        extra.append("generation.nccl_master_port=$NCCL_PORT")
    if plan.reward_service:
        extra.append("reward_service.url=http://$REWARD_ADDR:$REWARD_PORT")
    return [f'"{item}"' for item in extra]


def _trainer(spec: JobSpec) -> list[str]:
    plan = spec.plan
    nodes = ",".join(f"${{NODES[{i}]}}" for i in range(plan.trainer_nodes))
    exports = "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS"
    if plan.trainer_gpus:
        exports += f" CUDA_VISIBLE_DEVICES={','.join(map(str, plan.trainer_gpus))}"
    step = srun(spec, "trainer", nodes, plan.trainer_nodes, plan.trainer_tasks_per_node, ["--label"])
    command = ["python", "-m", "nemo_spatial.train", "--config", shlex.quote(spec.recipe)]
    command += [*map(shlex.quote, spec.overrides), *trainer_overrides(spec), '"${RESUME[@]}"']
    return [
        "RESUME=()",
        "((RESTART == 0)) || RESUME=(trainer.resume=true)  # a restart continues from the newest checkpoint",
        _start("trainer", step, task_shell(spec, exports, False), command),
        "TRAINER=$((${#PIDS[@]} - 1))",
    ]


def _watch() -> list[str]:
    return [
        "while true; do",
        "  if i=$(dead_step); then",
        '    wait "${PIDS[$i]}"; rc=$?',
        "    ((i == TRAINER)) && break",
        '    fail "$i" "${NAMES[$i]} exited with code $rc while the trainer ran"',
        "  fi",
        "  sleep 5",
        "done",
        'unset "PIDS[$TRAINER]"',
        "stop_steps",
        "step=$(checkpoint_step)",
        "if ((rc != 0)); then",
        '  echo "[$(stamp)] error: the trainer exited with code $rc at checkpoint step $step" >&2',
        '  log_tail "$TRAINER" >&2; exit "$rc"',
        "fi",
        'if ((step >= TOTAL_STEPS)); then echo "[$(stamp)] done: step $step of $TOTAL_STEPS"; exit 0; fi',
        "if ((RESTART >= MAX_RESTARTS)); then",
        '  echo "[$(stamp)] error: stopped at step $step after $RESTART restarts (launch.max_restarts)" >&2; exit 1',
        "fi",
        'echo "[$(stamp)] the trainer stopped at step $step of $TOTAL_STEPS (preemption): requeueing"',
        'scontrol requeue "$SLURM_JOB_ID"',
        "exit 0",
    ]
