"""The main job: `python -m nemo_spatial.train --config conf/debug/tiny_cpu.yaml [key=value ...]`.

Under torchrun or SLURM's srun (RANK and WORLD_SIZE set), every process runs the trainer (SPMD). Started
plainly, it runs `--nproc` local processes (default 1) over gloo on CPU / NCCL on GPU. Every rank builds the
policy shard and reads the prompt stream; the driver (rank 0) also starts the generation server and the
reward client, writes the run's config and revision, and logs. Everything is stopped on exit, also on errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from nemo_spatial.cli import add_verbose_flag, run_main
from nemo_spatial.config import Config, load_config, to_yaml, write_run_metadata
from nemo_spatial.errors import ConfigError
from nemo_spatial.preflight import preflight
from nemo_spatial.run_lock import RUN_LOCK_HELD_ENV, RunDirLock, acquire_for_run

logger = logging.getLogger("nemo_spatial.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML under conf/ (recipes/ or debug/)")
    parser.add_argument("--nproc", type=int, default=1, help="local processes when not under torchrun/srun")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if "RANK" in os.environ or args.nproc == 1:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            from nemo_spatial.net import free_port

            os.environ["MASTER_PORT"] = str(free_port())
        run(cfg)
        return 0
    check_restart_policy(cfg, args.nproc)  # before starting processes that would each fail on it
    preflight(cfg, args.nproc)
    from nemo_spatial.parallel.launch import spawn

    # The launcher owns the run directory (its ranks die with it); rank 0 sees it held by its parent.
    with RunDirLock.acquire(cfg.run_dir):
        spawn(_spawned_worker, nprocs=args.nproc, args=(to_yaml(cfg),), env={RUN_LOCK_HELD_ENV: str(os.getpid())})
    return 0


def _spawned_worker(rank: int, cfg_yaml: str) -> None:
    from omegaconf import OmegaConf

    from nemo_spatial.config import build

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    run(build(Config, [OmegaConf.create(cfg_yaml)]))  # type: ignore[list-item]


def run(cfg: Config) -> None:
    """Build every component of this rank and train."""
    from nemo_spatial.data import PromptStream
    from nemo_spatial.logging_sinks import MetricsLogger
    from nemo_spatial.trainer import Trainer

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    preflight(cfg, world_size)  # seconds, before the generation server, the policy and the data workers
    driver = int(os.environ.get("RANK", "0")) == 0
    check_restart_policy(cfg, world_size)
    run_dir = cfg.run_dir
    model_dir = cfg.policy.hf_path
    with ExitStack() as stack:
        if driver:
            lock = acquire_for_run(run_dir)  # a second run in this directory fails here, naming the holder
            if lock is not None:
                stack.callback(lock.release)
            write_run_metadata(cfg, run_dir)
        generator, reward, decode = _driver_services(cfg, model_dir, run_dir, stack) if driver else (None, None, None)
        policy = _build_policy(cfg)
        if generator is not None and hasattr(generator, "weights_provider"):
            # generation.on_server_death=restart re-pushes the current weights to the new server.
            generator.weights_provider = policy.named_hf_weights
        prompts = PromptStream.open(cfg.data, "train", processor_path=model_dir)
        stack.callback(prompts.close)
        val = PromptStream.open(cfg.data, "val", processor_path=model_dir) if driver and cfg.data.val_files else None
        metrics = MetricsLogger(cfg.logging, run_dir, cfg.run.name, cfg.trainer.total_steps, enabled=driver)
        stack.callback(metrics.close)
        trainer = Trainer(
            cfg, policy, prompts, generator, reward, metrics, run_dir, _pad_id(model_dir), decode, val_prompts=val
        )
        trainer.fit()
    if driver:
        logger.info("done: %d steps; outputs in %s", trainer.step, Path(run_dir).resolve())


def check_restart_policy(cfg: Config, world_size: int) -> None:
    """A restarted server needs the current weights, which the driver can only export alone in a 1-process run."""
    if cfg.generation.on_server_death == "restart" and world_size > 1:
        raise ConfigError(
            f"generation.on_server_death=restart works with one trainer process, and this run has {world_size}: "
            "the weight export that re-syncs a restarted server is collective over every rank. Use "
            "on_server_death=stop (the run stops with its last checkpoint; a resumed run starts a new server)"
        )


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
