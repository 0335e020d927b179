"""The rendered sbatch scripts of the multi-node GPU recipes: node ranges, task counts, GPU binding, addresses,
ports, environment, containers and the preemption signal; and the errors of impossible placements."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

from nemo_spatial.errors import ConfigError
from nemo_spatial.launcher.cluster import load_cluster
from nemo_spatial.launcher.plan import PORT_EXPRESSIONS
from nemo_spatial.launcher.render import render
from nemo_spatial.launcher.submit import build_spec, parse_args

ROOT = Path(__file__).resolve().parents[3]
PYXIS = "conf/cluster/example_pyxis.yaml"
RECIPES = {  # recipe: (nodes, trainer nodes, trainer GPUs per node, servers, server TP)
    "spatialthinker_qwen25vl3b_stvqa7k_1n8g_tp1": (1, 1, 4, 4, 1),
    "spatialthinker_qwen25vl7b_stvqa7k_2n8g_tp2": (2, 1, 8, 4, 2),
    "spatialthinker_qwen25vl7b_stvqa7k_4n8g_tp2": (4, 2, 8, 8, 2),
}


def rendered(recipe: str, *extra: str, cluster: str = PYXIS) -> str:
    args = parse_args(["--recipe", str(ROOT / recipe), "--cluster", str(ROOT / cluster), "--dry-run", *extra])
    return render(build_spec(args))


def step_lines(script: str, name: str) -> list[str]:
    """The srun, task shell and command lines of `start_step NAME ...`."""
    lines = script.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"start_step {name} "))
    return lines[at + 1 : at + 4]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_gpu_recipe_script_places_every_component(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    nodes, trainer_nodes, trainer_gpus, servers, tp = RECIPES[name]
    script = rendered(f"conf/recipes/{name}.yaml")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for flag in (f"--nodes={nodes}", "--gpus-per-node=8", "--requeue", "--exclusive", "--account=my_account"):
        assert f"#SBATCH {flag}" in header, flag
    srun, shell, command = step_lines(script, "trainer")
    node_range = ",".join(f"${{NODES[{i}]}}" for i in range(trainer_nodes))
    assert f'--nodes={trainer_nodes} --ntasks-per-node={trainer_gpus} --nodelist="{node_range}"' in srun
    assert f"CUDA_VISIBLE_DEVICES={','.join(map(str, range(trainer_gpus)))};" in shell
    assert "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS" in shell
    urls = [f"http://$GEN_ADDR_{i}:$((GEN_PORT_BASE + {i}))" for i in range(servers)]
    assert f'"generation.urls=[{",".join(urls)}]"' in command
    assert '"reward_service.url=http://$REWARD_ADDR:$REWARD_PORT"' in command
    assert ('"generation.transport=nccl"' in command) == (nodes > 1)
    assert ('"generation.nccl_master_address=$MASTER_ADDR"' in command) == (nodes > 1)
    used: dict[str, set[int]] = {}
    for index in range(servers):
        srun, shell, command = step_lines(script, f"generation_{index}")
        node = re.search(r'--nodelist="\$\{NODES\[(\d)\]\}"', srun)
        gpus = re.search(r"CUDA_VISIBLE_DEVICES=([\d,]+) ", shell)
        assert node and gpus, (srun, shell)
        ids = {int(g) for g in gpus.group(1).split(",")}
        assert len(ids) == tp and not ids & used.get(node.group(1), set()), "a GPU given twice"
        assert int(node.group(1)) >= trainer_nodes or not ids & set(range(trainer_gpus)), "a trainer GPU taken"
        used.setdefault(node.group(1), set()).update(ids)
        assert f"--tensor-parallel-size {tp} " in command
        assert f"--host 0.0.0.0 --port $((GEN_PORT_BASE + {index}))" in command
        assert f"VLLM_PORT=$((VLLM_PORT_BASE + {index * 10}))" in shell and 'trap "" USR1' in shell
        assert f'GEN_ADDR_{index}=$(node_addr "${{NODES[{node.group(1)}]}}")' in script
        assert "/nemo/v1/health" in script
    srun, shell, _ = step_lines(script, "reward")
    assert '--nodelist="${NODES[0]}"' in srun and "CUDA_VISIBLE_DEVICES=;" in shell
    # pyxis: the image, the repository at its own path, no home, a name scoped to the job and restart
    assert "--container-image=/lustre/images/nemo-spatial.sqsh" in srun
    assert f"--container-mounts={ROOT}:{ROOT},/lustre/models:/models:ro,/lustre/hf_cache:/hf_cache" in srun
    assert '--container-name="nemo-spatial-reward-${SLURM_JOB_ID}-${RESTART}"' in srun
    assert "--no-container-mount-home" in srun and f"--container-workdir={ROOT}" in srun
    assert "export HF_HOME=/hf_cache" in script and "export NCCL_SOCKET_IFNAME='^lo,docker'" in script


def test_signal_lead_is_a_step_and_a_save_with_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    recipe = "conf/recipes/spatialthinker_qwen25vl7b_stvqa7k_2n8g_tp2.yaml"
    script = rendered(recipe, "launch.step_time_s=1000", "launch.save_time_s=200", "launch.signal_margin_s=90")
    assert f"#SBATCH --signal=USR1@{math.ceil(1.25 * 1200) + 90}" in script
    with pytest.raises(ConfigError, match="before the time limit"):
        rendered(recipe, "launch.step_time_s=20000", "cluster.time_limit=01:00:00")


def test_ports_stay_in_their_bands_below_the_ephemeral_range() -> None:
    bands = {"MASTER_PORT": (1400, 1999), "NCCL_PORT": (1400, 1999), "GEN_PORT_BASE": (3000, 4990)}
    bands |= {"VLLM_PORT_BASE": (7000, 8900), "REWARD_PORT": (5000, 5999)}
    for job in (0, 1, 299, 300, 4567, 10**6 + 7):
        values = {name: eval(expr, {"SLURM_JOB_ID": job}) for name, expr in PORT_EXPRESSIONS.items()}
        for name, (low, high) in bands.items():
            assert low <= values[name] <= high, (job, name, values[name])
        assert values["MASTER_PORT"] != values["NCCL_PORT"]


def test_one_server_is_given_as_generation_url_and_shm_on_one_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    script = rendered("conf/debug/tiny_cpu.yaml", "launch.generation_servers=1", cluster="conf/cluster/localhost.yaml")
    _, _, command = step_lines(script, "trainer")
    assert '"generation.url=http://$GEN_ADDR_0:$((GEN_PORT_BASE + 0))"' in command
    assert "generation.urls" not in command and "nccl" not in command
    script = rendered("conf/debug/tiny_cpu.yaml", "launch.generation_servers=1", "generation.transport=nccl",
                      cluster="conf/cluster/localhost.yaml")  # fmt: skip
    _, _, command = step_lines(script, "trainer")
    assert '"generation.nccl_master_address=$MASTER_ADDR"' in command  # the server's URL is its node's address
    assert "--container" not in script and "source .venv/bin/activate" in script
    assert "reward_service.url" not in command  # reward_service.mode=local: no service to start


def test_eval_and_export_jobs_are_one_step_on_the_run_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    recipe = "conf/recipes/spatialthinker_qwen25vl7b_stvqa7k_2n8g_tp2.yaml"
    script = rendered(recipe, "--job", "eval", "--", "--benchmarks", "cvbench", "--limit", "50")
    assert "#SBATCH --nodes=1" in script and "#SBATCH --gpus-per-node=2" in script and "--signal" not in script
    assert 'python -m nemo_spatial.eval --model "$RUN_DIR" --tensor-parallel-size 2 --benchmarks cvbench' in script
    script = rendered("conf/recipes/spatialthinker_qwen25vl7b_stvqa7k_1n4g_tp2.yaml", "--job", "export")
    assert 'python tools/megatron_to_hf.py --checkpoint "$RUN_DIR" --nproc 2' in script  # no placement for one step


def test_cluster_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bare_metal: true\nvenv: /v\ngpus_per_nod: 8\n")
    with pytest.raises(ConfigError, match="gpus_per_nod.*did you mean 'gpus_per_node'"):
        load_cluster(path)
    path.write_text("bare_metal: true\n")
    with pytest.raises(ConfigError, match="needs venv"):
        load_cluster(path)
    path.write_text("container:\n  image: x.sqsh\ntime_limit: 4h\n")
    with pytest.raises(ConfigError, match="time_limit"):
        load_cluster(path)


def test_placements_that_do_not_fit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    recipe = "conf/recipes/spatialthinker_qwen25vl3b_stvqa7k_1n8g_tp1.yaml"
    with pytest.raises(ConfigError, match="do not fit"):
        rendered(recipe, "launch.generation_servers=5")
    with pytest.raises(ConfigError, match="share rank 0's GPU"):
        rendered(recipe, "launch.generation_servers=0", "launch.trainer_gpus_per_node=0")
    with pytest.raises(ConfigError, match="does not divide"):
        rendered(recipe, "launch.trainer_gpus_per_node=3", "launch.generation_servers=1",
                 "parallel.tensor_model_parallel_size=2")  # fmt: skip


def test_a_colocated_recipe_lets_the_trainer_spawn_its_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    recipe = "conf/recipes/spatialthinker_qwen25vl7b_stvqa7k_1n4g_tp2.yaml"  # generation.placement=colocated
    _, _, command = step_lines(rendered(recipe), "trainer")
    assert "generation.url" not in command  # no server step: the trainer spawns and sleeps its own
    with pytest.raises(ConfigError, match="placement=colocated.*launch.generation_servers=0"):
        rendered(recipe, "launch.generation_servers=1")
