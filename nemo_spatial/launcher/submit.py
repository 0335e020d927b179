"""`python launcher/submit.py --recipe conf/recipes/X.yaml --cluster conf/cluster/Y.yaml [key=value ...]`.

Resolves the recipe (with the overrides) and the cluster file, places every component (plan.py), renders one
sbatch script (render.py) and submits it with `sbatch --parsable`; `--dry-run` prints the script, the resolved
configs and the placement instead. `--job eval|export` submits `python -m nemo_spatial.eval` or
`tools/megatron_to_hf.py` on the run directory (their flags after `--`). Overrides starting with `cluster.`
change the cluster file (`cluster.time_limit=01:00:00`); the rest change the recipe. Errors of the inputs are
one line naming the key (exit status 2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from nemo_spatial.cli import run_main
from nemo_spatial.config import load_config, to_yaml
from nemo_spatial.errors import UserError
from nemo_spatial.launcher.cluster import cluster_yaml, load_cluster
from nemo_spatial.launcher.plan import Plan, make_plan
from nemo_spatial.launcher.render import JOBS, JobSpec, render


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python launcher/submit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="conf/recipes/*.yaml (or conf/debug/*.yaml)")
    parser.add_argument("--cluster", required=True, help="conf/cluster/*.yaml")
    parser.add_argument("--job", choices=JOBS, default="train")
    parser.add_argument("--dry-run", action="store_true", help="print the script and the resolved config only")
    parser.add_argument("overrides", nargs="*", help="key=value (recipe) or cluster.key=value (cluster file)")
    argv = sys.argv[1:] if argv is None else argv
    job_args: list[str] = []
    if "--" in argv:  # everything after -- goes to the eval / export command
        at = argv.index("--")
        argv, job_args = argv[:at], argv[at + 1 :]
    args = parser.parse_args(argv)
    args.job_args = job_args
    return args


def build_spec(args: argparse.Namespace) -> JobSpec:
    cluster_overrides = [item.removeprefix("cluster.") for item in args.overrides if item.startswith("cluster.")]
    overrides = [item for item in args.overrides if not item.startswith("cluster.")]
    cluster = load_cluster(args.cluster, cluster_overrides)
    cfg = load_config(args.recipe, overrides)
    recipe = Path(args.recipe).resolve()
    repo = cluster.repo()
    shown = str(recipe.relative_to(repo)) if recipe.is_relative_to(repo) else str(recipe)  # the job runs in repo
    plan = make_plan(cfg, cluster, check=args.job == "train")
    return JobSpec(cfg, cluster, plan, shown, overrides, args.job, args.job_args)


def describe(plan: Plan) -> str:
    """The placement in words: one line per component."""
    lines = [
        f"trainer: nodes 0..{plan.trainer_nodes - 1}, {plan.trainer_tasks_per_node} task(s) per node "
        f"(world size {plan.world_size}), GPUs {list(plan.trainer_gpus) or 'none (CPU)'}"
    ]
    lines += [f"generation_{s.index}: node {s.node}, GPUs {list(s.gpus) or 'none (CPU)'}" for s in plan.servers]
    if plan.reward_service:
        lines.append(f"reward service: node 0, {plan.reward_cpus} CPU(s)")
    transport = "nccl across nodes" if plan.cross_node else "the config's (same host)"
    return "\n".join([*lines, f"weight sync: {transport}"])


def submit(spec: JobSpec, script: str) -> str:
    """sbatch the script (and launch.chain dependent copies); prints and returns the first job id."""
    spec.log_root.mkdir(parents=True, exist_ok=True)
    path = spec.log_root / f"{spec.job}.sbatch"
    path.write_text(script)
    chain = spec.cfg.launch.chain if spec.job == "train" else 0
    ids: list[str] = []
    for _ in range(chain + 1):
        dependency = [f"--dependency=afterany:{ids[-1]}"] if ids else []
        result = subprocess.run(["sbatch", "--parsable", *dependency, str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise UserError(f"sbatch refused {path}: {result.stderr.strip() or result.stdout.strip()}")
        ids.append(result.stdout.strip().split(";")[0])
    first = ids[0]
    logs = spec.log_root / first / "restart_0"
    print(f"submitted job {first}" + (f" (then {', '.join(ids[1:])}, each after the previous)" if ids[1:] else ""))
    print(f"script:    {path}")
    print(f"batch log: {spec.log_root}/sbatch-{first}.log")
    print(f"logs:      {spec.log_root}/{first}/restart_<N>/ (one folder per restart)")
    print(f"follow:    tail -F {spec.log_root}/sbatch-{first}.log {logs}/*.log")
    return first


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = build_spec(args)
    script = render(spec)
    if args.dry_run:
        print(script)
        print("# ---- resolved recipe ----")
        print(to_yaml(spec.cfg))
        print("# ---- resolved cluster ----")
        print(cluster_yaml(spec.cluster))
        print("# ---- placement ----")
        print(describe(spec.plan))
        return 0
    submit(spec, script)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
