"""Supervised fine-tuning: `python -m nemo_spatial.sft --config conf/recipes/sft_qwen25vl3b_stvqa7k_1n4g_tp1.yaml`.

The paper's SFT baseline row: the same Megatron Qwen2.5-VL policy (layouts, checkpoints, resume, preemption,
metrics sinks) trained with cross-entropy on STVQA-7K's ground truth in the SpatialThinker answer format
(sft_trainer.py, data/sft_target.py). Started like the GRPO trainer: under torchrun/srun every process runs it;
started plainly, `--nproc` local processes; the same preflight checks, run-directory lock (taken before the run
console opens logs/train.log) and end-of-run report (`finish_run`). Rank 0 also starts the generation server
for the validation reward (`sft.val_reward`). The result starts a GRPO run with
`policy.init_checkpoint=<run dir>` (its latest checkpoint's weights) or, once exported to Hugging Face format,
`policy.hf_path=<export>`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from nemo_spatial.cli import add_verbose_flag, run_main, verbose_requested
from nemo_spatial.entry import start_run
from nemo_spatial.preflight import preflight
from nemo_spatial.sft_config import SFTRunConfig, load_sft_config

logger = logging.getLogger("nemo_spatial.sft")


def main(argv: list[str] | None = None) -> int:
    """Set up as `nemo_spatial.train` does: preflight, the run directory's lock, then the run console."""
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.sft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML under conf/ (recipes/sft_* or debug/tiny_cpu_sft)")
    parser.add_argument("--nproc", type=int, default=1, help="local processes when not under torchrun/srun")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    verbose = args.verbose or verbose_requested([])
    cfg = load_sft_config(args.config, args.overrides)
    return start_run(cfg, args.nproc, verbose, run)


def run(cfg: SFTRunConfig) -> None:
    """Build every component of this rank and fine-tune."""
    from transformers import AutoTokenizer

    from nemo_spatial.config import write_run_metadata
    from nemo_spatial.data import PromptStream
    from nemo_spatial.logging_sinks import MetricsLogger
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.report import finish_run
    from nemo_spatial.sft_trainer import SFTTrainer
    from nemo_spatial.train import _build_policy, _driver_services, _pad_id

    preflight(cfg, int(os.environ.get("WORLD_SIZE", "1")))  # seconds, before the policy and the data workers
    cpu_compat.activate(cfg.parallel)  # the CPU mode (gloo, no GPU), before any component is built
    driver = int(os.environ.get("RANK", "0")) == 0
    run_dir, model_dir = cfg.run_dir, cfg.policy.hf_path
    if driver:
        write_run_metadata(cfg, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    with_reward = cfg.sft.val_every > 0 and cfg.sft.val_reward and bool(cfg.data.val_files)
    with ExitStack() as stack:
        services: tuple[Any, Any, Any] = (None, None, None)
        if driver and with_reward:
            services = _driver_services(cfg, model_dir, run_dir, stack)
        policy = _build_policy(cfg)
        prompts = PromptStream.open(cfg.data, "train", processor_path=model_dir)
        stack.callback(prompts.close)
        val = PromptStream.open(cfg.data, "val", processor_path=model_dir) if cfg.data.val_files else None
        if val is not None:
            stack.callback(val.close)
        metrics = MetricsLogger(cfg.logging, run_dir, cfg.run.name, cfg.sft.total_steps, enabled=driver)
        stack.callback(metrics.close)
        trainer = SFTTrainer(
            cfg, policy, prompts, val, encode, int(tokenizer.eos_token_id), _pad_id(model_dir), metrics,
            Path(run_dir), generator=services[0], reward=services[1], decode=services[2],
        )  # fmt: skip
        trainer.fit()
    if driver:
        logger.info("done: %d SFT steps; outputs in %s", trainer.step, Path(run_dir).resolve())
        finish_run(run_dir)  # plots, report.md and its table on the console, as after a GRPO run


if __name__ == "__main__":
    sys.exit(run_main(main))
