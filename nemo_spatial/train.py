"""The main job: `python -m nemo_spatial.train --config conf/debug/tiny_cpu.yaml [key=value ...]`.

Under torchrun or SLURM's srun (RANK and WORLD_SIZE set), every process runs the trainer (SPMD). Started
plainly, it runs `--nproc` local processes (default 1) over gloo on CPU / NCCL on GPU. Every rank builds the
policy shard; the driver (rank 0) also reads the prompt stream, starts the generation server and the reward
client, writes the run's config and revision, and logs. Everything is stopped on exit, also on errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from nemo_spatial.cli import add_verbose_flag, run_main, verbose_requested
from nemo_spatial.config import Config, load_config, write_run_metadata
from nemo_spatial.entry import start_run
from nemo_spatial.preflight import preflight

logger = logging.getLogger("nemo_spatial.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML under conf/ (recipes/ or debug/)")
    parser.add_argument("--nproc", type=int, default=1, help="local processes when not under torchrun/srun")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    verbose = args.verbose or verbose_requested([])
    cfg = load_config(args.config, args.overrides)
    return start_run(cfg, args.nproc, verbose, run)


def run(cfg: Config) -> None:
    """Build every component of this rank and train (inside `hold_run_dir` and `run_console`, as main does)."""
    from nemo_spatial.data import PixelPreparer, PromptStream
    from nemo_spatial.logging_sinks import MetricsLogger
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.report import finish_run
    from nemo_spatial.trainer import Trainer

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    preflight(cfg, world_size)  # seconds, before the generation server, the policy and the data workers
    cpu_compat.activate(cfg.parallel)  # the CPU mode (gloo, no GPU), before any component is built
    driver = int(os.environ.get("RANK", "0")) == 0
    run_dir = cfg.run_dir
    model_dir = cfg.policy.hf_path
    with ExitStack() as stack:
        if driver:  # the run directory is this run's (main took its lock, before the console's log)
            write_run_metadata(cfg, run_dir)
        generator, reward, decode = _driver_services(cfg, model_dir, run_dir, stack) if driver else (None, None, None)
        policy = _build_policy(cfg)
        # The driver alone reads prompts, without pixel_values (what generation and the reward need); each rank
        # gets those of its own rows from it and prepares their pixel_values itself (PixelPreparer).
        open_stream = partial(PromptStream.open, cfg.data, processor_path=model_dir, pixels=False)
        prompts = open_stream("train") if driver else None
        if prompts is not None:
            stack.callback(prompts.close)
        val = open_stream("val") if driver and cfg.data.val_files else None
        if val is not None:
            stack.callback(val.close)
        metrics = MetricsLogger(cfg.logging, run_dir, cfg.run.name, cfg.trainer.total_steps, enabled=driver)
        stack.callback(metrics.close)
        trainer = Trainer(
            cfg, policy, prompts, generator, reward, metrics, run_dir, _pad_id(model_dir), decode, val_prompts=val,
            prepare_pixels=PixelPreparer(model_dir),  # type: ignore[arg-type]  # its PromptSamples are Prompts
        )  # fmt: skip
        trainer.fit()
    if driver:
        logger.info("done: %d steps; outputs in %s", trainer.step, Path(run_dir).resolve())
        finish_run(run_dir)  # plots, rollout pages, report.md and its table on the console


def _driver_services(cfg: Config, model_dir: str, run_dir: Path, stack: ExitStack) -> tuple[Any, Any, Any]:
    """The generation server and the reward client (driver only), closed when the stack unwinds."""
    from transformers import AutoTokenizer

    from nemo_spatial.generation import build_generator
    from nemo_spatial.reward.client import make_reward_client

    reward = make_reward_client(cfg)
    stack.callback(reward.close)
    generator = build_generator(cfg.generation, model_dir, run_dir)
    stack.callback(generator.close)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def decode(token_ids: list[int]) -> str:
        return str(tokenizer.decode(token_ids, skip_special_tokens=True))

    return generator, reward, decode


def _build_policy(cfg: Config) -> Any:
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy

    return MegatronPolicy(cfg.policy, cfg.parallel, seed=cfg.run.seed)


def _pad_id(model_dir: str) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


if __name__ == "__main__":
    sys.exit(run_main(main))
