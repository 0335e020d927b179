"""Runs to export: the tiny policy trained for a step and checkpointed at a given layout, in the trainer's layout.

    spawn(make_runs, nprocs=2, args=(model_dir, out_root, RUNS))   # one group of 2 gloo processes, every layout

Each run is what the trainer leaves: `<run>/config.yaml` + `run_info.json` (config.write_run_metadata), a
`metrics.jsonl` with a validation reward, and `checkpoints/step_000001/` written by nemo_spatial.checkpoint's
save_checkpoint around MegatronPolicy.save_checkpoint. The policy takes one real optimizer step (the stand-in
loss of the layout tests) so the exported weights differ from the base model's; a "frozen" run takes its step
with a learning rate far below float32 resolution and no weight decay (lr must be > 0), so its weights
cannot move. Rank 0 returns, per run, the HF weights the policy held when it saved (the export's reference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# name -> (parallel config, learning rate)
RUNS: dict[str, tuple[dict[str, Any], float]] = {
    "tp1": ({}, 0.1),
    "tp2": ({"tensor_model_parallel_size": 2}, 0.1),
    "pp2": ({"pipeline_model_parallel_size": 2}, 0.1),
    "frozen_tp1": ({}, 1e-30),
    "frozen_tp2": ({"tensor_model_parallel_size": 2}, 1e-30),
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
    from tests.distributed.policy_scenarios import stand_in_loss

    overrides = [
        f"policy.hf_path={model_dir}", f"policy.optimizer.lr={lr}", "policy.optimizer.weight_decay=0.0",
        "policy.optimizer.adam_eps=1.0", "policy.micro_batch_size=2", "policy.max_seq_length=256",
        "data.train_files=synthetic:8:0@train", "data.val_files=synthetic:4:0@val",
        *(f"parallel.{key}={value}" for key, value in parallel.items()),
    ]  # fmt: skip
    cfg = load_config(Path(__file__).resolve().parents[3] / "conf" / "debug" / "tiny_cpu.yaml", overrides)
    policy = MegatronPolicy(cfg.policy, cfg.parallel, seed=1)
    policy.train_step(PolicyBatch(**tensors), stand_in_loss)
    writer = dist.get_rank() == 0
    if writer:
        write_run_metadata(cfg, run_dir)
        lines = [{"step": 1, "reward/overall/mean": 0.25, "val/reward/overall/mean": VAL_REWARD}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    save_checkpoint(
        run_dir, TrainerState(step=1), lambda target: policy.save_checkpoint(str(target)),
        is_writer=writer, barrier=dist.barrier,
    )  # fmt: skip
    return dict(policy.named_hf_weights())
