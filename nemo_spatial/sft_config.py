"""`sft:` config section and the SFT run's config (every GRPO section + `sft`), loaded like the trainer's.

    cfg = load_sft_config("conf/recipes/sft_qwen25vl3b_stvqa7k_1n4g_tp1.yaml", ["sft.total_steps=10"])

The SFT run shares the GRPO run's sections (run, data, policy, parallel, generation for the validation
rollouts, reward for their score, logging); `trainer:` and `algorithm:` are ignored. Its defaults are in
conf/sft.yaml, which SFT recipes list after their GRPO base (`_base_: [../base.yaml, ../sft.yaml]`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nemo_spatial.config import Config, _load_yaml_with_bases, _parse_overrides, build
from nemo_spatial.data.sft_target import TARGET_FORMATS
from nemo_spatial.errors import ConfigError


@dataclass
class SFTConfig:
    """The supervised loop: steps, global batch, target text, validation and checkpoints."""

    total_steps: int = 320  # optimizer steps (STVQA-7K: 6,895 rows / 64 = 108 steps an epoch: ~3 epochs)
    batch_size: int = 64  # samples per optimizer step (global, over every DP rank)
    target: str = "spatialthinker"  # spatialthinker (4-tag template) | answer_only (data/sft_target.py)
    val_every: int = 20  # 0: no validation
    val_prompts: int = 0  # validation samples for the loss and the reward; 0: the whole split
    val_reward: bool = True  # also generate on the validation prompts (generation server) and score them
    val_before_train: bool = True  # a step-0 validation: the curve's start
    save_every: int = 50  # 0: only on preemption and at the end
    keep_last: int = 2
    resume: bool = True

    def __post_init__(self) -> None:
        for name in ("total_steps", "batch_size", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sft.{name}={getattr(self, name)} must be at least 1")
        for name in ("val_every", "val_prompts", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sft.{name}={getattr(self, name)} must be >= 0 (0 turns it off)")
        if self.target not in TARGET_FORMATS:
            raise ConfigError(f"sft.target={self.target!r}; use one of: {', '.join(TARGET_FORMATS)}")


@dataclass
class SFTRunConfig(Config):
    sft: SFTConfig = field(default_factory=SFTConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft.batch_size % self.policy.micro_batch_size:
            raise ConfigError(
                f"sft.batch_size={self.sft.batch_size} is not a multiple of policy.micro_batch_size="
                f"{self.policy.micro_batch_size}; choose a micro-batch size that divides it"
            )
        if self.policy.reference != "none":
            # SFT has no KL term: a CPU copy of the weights would only cost memory.
            self.policy.reference = "none"


def load_sft_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> SFTRunConfig:
    """The SFT run's config from defaults, the YAML file (with its bases) and `key=value` overrides."""
    layers = [_load_yaml_with_bases(Path(path))] if path is not None else []
    layers.append(_parse_overrides(overrides or []))
    return build(SFTRunConfig, layers)
