"""`trainer:` config section: the GRPO loop's batch sizes, schedule, validation and checkpoints.

Defaults are SpatialThinker's (../shared/docs/upstream-facts.md): 512 prompts per rollout step x n = 8
samples (the `generation.sampling.n`), 128 prompts (1,024 sequences) per optimizer step, so 4 optimizer steps
per rollout batch, one PPO epoch, 75 steps, validation and a checkpoint every 5 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_spatial.errors import ConfigError


@dataclass
class TrainerConfig:
    total_steps: int = 75
    prompts_per_step: int = 512  # rollout batch: prompts sampled per step (x n samples each)
    prompts_per_update: int = 128  # prompts per optimizer step (their n samples each)
    ppo_epochs: int = 1
    val_every: int = 5  # 0: no validation
    val_prompts: int = 0  # 0: the whole validation split
    val_before_train: bool = False
    save_every: int = 5  # 0: only on preemption and at the end
    keep_last: int = 2
    export_hf_every: int = 0  # a Hugging Face export (<run>/hf/step_N) at every k-th checkpointed step; 0: off
    resume: bool = True  # continue from the run directory's latest checkpoint when there is one
    resume_from: str = ""  # a checkpoint (step_N under <run_dir>/checkpoints, or a path); empty: the newest intact
    async_rollouts: int = 0  # k > 0: generate steps s+1..s+k while step s trains (weights <= k versions old)
    max_steps_without_update: int = 3  # fail after this many consecutive steps that trained nothing; 0: never

    def __post_init__(self) -> None:
        for name in ("total_steps", "prompts_per_step", "prompts_per_update", "ppo_epochs", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name}={getattr(self, name)} must be at least 1")
        off_when_zero = ("val_every", "val_prompts", "save_every", "export_hf_every", "max_steps_without_update")
        for name in (*off_when_zero, "async_rollouts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"trainer.{name}={getattr(self, name)} must be >= 0 (0 turns it off)")
        if self.prompts_per_step % self.prompts_per_update:
            raise ConfigError(
                f"trainer.prompts_per_step={self.prompts_per_step} must be a multiple of "
                f"trainer.prompts_per_update={self.prompts_per_update} (each optimizer step takes whole groups)"
            )

    @property
    def updates_per_step(self) -> int:
        return self.ppo_epochs * self.prompts_per_step // self.prompts_per_update
