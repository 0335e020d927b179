"""Runs to export: the tiny policy trained for a step and checkpointed at a given layout, in the trainer's layout.

    spawn(make_runs, nprocs=2, args=(model_dir, out_root, RUNS))   # one group of 2 gloo processes, every layout

Each run is what the trainer leaves: `<run>/config.yaml` + `run_info.json` (config.write_run_metadata), a
`metrics.jsonl` with a validation reward, and `checkpoints/step_000001/` written by nemo_spatial.checkpoint's
save_checkpoint around MegatronPolicy.save_checkpoint. The policy takes one real optimizer step (the stand-in
loss of the layout tests) so the exported weights differ from the base model's; a "frozen" run takes its step
with a learning rate far below float32 resolution (FROZEN_LR) and no weight decay, so its weights cannot move.
Rank 0 returns, per run, the HF weights the policy held when it saved (the export's reference). The tp2 run also
writes the trainer's own export (MegatronPolicy.export_hf, what trainer.export_hf_every calls) to
`<run>/trainer_export`.

`export_steps` is the other worker: one export process that runs the command's `main` for a list of argument
lists (and perturbs a tensor between them when asked), so the many exports share one Megatron import; then
it starts a training policy from each exported directory (policy.hf_path=OUT) and returns its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# policy.optimizer.lr must be > 0. AdamW's first step moves a weight by lr / (1 - beta1) x m / (sqrt(v) + eps), at
# most 10 x lr here (eps = 1 > |grad|): 1e-46, under half of float32's smallest step (1.4e-45, a subnormal), so
# every update rounds to zero, also for the weights that start at exactly 0 (Qwen's biases: 1e-30 moved those).
FROZEN_LR = 1e-47
# name -> (parallel config, learning rate)
RUNS: dict[str, tuple[dict[str, Any], float]] = {
    "tp1": ({}, 0.1),
    "tp2": ({"tensor_model_parallel_size": 2}, 0.1),
    "pp2": ({"pipeline_model_parallel_size": 2}, 0.1),
    "frozen_tp1": ({}, FROZEN_LR),
    "frozen_tp2": ({"tensor_model_parallel_size": 2}, FROZEN_LR),
}
VAL_REWARD = 0.375


def make_runs(rank: int, model_dir: str, root: str, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    from tests.distributed.policy_scenarios import build_batch

    batch = build_batch(Path(model_dir))
    weights = {}
    for name in names:
        parallel, lr = RUNS[name]
        weights[name] = _one_run(Path(root) / name, model_dir, parallel, lr, batch)
    return weights if rank == 0 else {}


def _one_run(run_dir: Path, model_dir: str, parallel: dict[str, Any], lr: float, tensors: dict) -> dict:
    import torch.distributed as dist

    from nemo_spatial.checkpoint import TrainerState, save_checkpoint
    from nemo_spatial.config import load_config, write_run_metadata
    from nemo_spatial.models.qwen25_vl.batch import PolicyBatch
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat
    from tests.distributed.policy_scenarios import stand_in_loss

    overrides = [
        f"policy.hf_path={model_dir}", f"policy.optimizer.lr={lr}", "policy.optimizer.weight_decay=0.0",
        "policy.optimizer.adam_eps=1.0", "policy.micro_batch_size=2", "policy.max_seq_length=256",
        "data.train_files=synthetic:8:0@train", "data.val_files=synthetic:4:0@val",
        *(f"parallel.{key}={value}" for key, value in parallel.items()),
    ]  # fmt: skip
    cfg = load_config(Path(__file__).resolve().parents[3] / "conf" / "debug" / "tiny_cpu.yaml", overrides)
    cpu_compat.activate(cfg.parallel)
    policy = MegatronPolicy(cfg.policy, cfg.parallel, seed=1)
    policy.train_step(PolicyBatch(**tensors), stand_in_loss)
    writer = dist.get_rank() == 0
    if writer:
        write_run_metadata(cfg, run_dir)
        lines = [{"step": 1, "reward/overall/mean": 0.25, "val/reward/overall/mean": VAL_REWARD}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    checkpoint = save_checkpoint(
        run_dir, TrainerState(step=1), lambda target: policy.save_checkpoint(str(target)),
        is_writer=writer, barrier=dist.barrier,
    )  # fmt: skip
    weights = dict(policy.named_hf_weights())
    if run_dir.name == "tp2":  # the trainer's own export (trainer.export_hf_every), from the weights in memory
        out = Path(policy.export_hf(str(checkpoint)))
        if writer:
            out.rename(run_dir / "trainer_export")  # where the CLI's default output does not collide with it
    return weights


def export_steps(rank: int, steps: list[tuple[str, Any]]) -> dict[str, Any]:
    """("main", argv) -> (status, captured output); ("perturb", (file, tensor)); ("copy", (src, dst));
    ("policy", hf_path) -> the weights of a training policy started from it."""
    import contextlib
    import io
    import shutil

    from nemo_spatial.cli import run_main
    from tools.megatron_to_hf import main

    results: dict[str, Any] = {"main": [], "policy": {}}
    for kind, value in steps:
        if kind == "main":
            captured = io.StringIO()
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                status = run_main(main, list(value))
            results["main"].append((status, captured.getvalue()))
        elif kind == "perturb":
            _perturb(*value)
        elif kind == "copy":
            shutil.copytree(*value)
        else:
            results["policy"][value] = _policy_weights(value)
    return results


def _perturb(path: str, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, path, metadata={"format": "pt"})


def _policy_weights(hf_path: str) -> dict[str, torch.Tensor]:
    from nemo_spatial.models.qwen25_vl.config import PolicyConfig
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig

    cpu_compat.activate(ParallelConfig())
    policy = MegatronPolicy(PolicyConfig(hf_path=hf_path, max_seq_length=256), ParallelConfig(), seed=1)
    return dict(policy.named_hf_weights())
