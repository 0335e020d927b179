"""Configuration of the Megatron policy: model source and precision, micro-batching, optimizer, FP8.

Defaults follow SpatialThinker's recipe (../shared/docs/upstream-facts.md): AdamW, lr 1e-6 constant, betas
(0.9, 0.999), weight decay 0.01, gradient clipping at 1.0 with the step skipped on a non-finite norm, bf16 on GPU,
every parameter trained (the vision tower too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_spatial.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")
REFERENCE_MODES = ("cpu", "none")
LR_SCHEDULES = ("constant", "linear", "cosine")
# Transformer Engine FP8 recipes as Megatron-Core names them ("current" is an alias of "tensorwise").
FP8_RECIPES = ("delayed", "tensorwise", "blockwise")
FP8_RECIPE_ALIASES = {"current": "tensorwise"}
FP8_FORMATS = ("hybrid", "e4m3")


@dataclass
class OptimizerConfig:
    """AdamW through Megatron's (distributed) optimizer, and its learning-rate schedule."""

    lr: float = 1.0e-6
    min_lr: float = 0.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1.0e-8
    clip_grad: float = 1.0  # max global grad norm; 0 disables clipping
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0  # steps over which linear/cosine decay to min_lr; 0 = constant after warm-up
    use_distributed_optimizer: bool = True  # shard Adam states over data-parallel ranks (ZeRO-1)
    # Upstream (torch AdamW over model.parameters()) decays every parameter; Megatron-LM's default exempts
    # biases and 1-D (norm) weights. True keeps upstream's behaviour.
    decay_biases_and_norms: bool = True

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"policy.optimizer.lr={self.lr} must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"policy.optimizer.min_lr={self.min_lr} must be in [0, lr={self.lr}]")
        if self.weight_decay < 0:
            raise ConfigError(f"policy.optimizer.weight_decay={self.weight_decay} must be >= 0")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"policy.optimizer.{key}={getattr(self, key)} must be in [0, 1)")
        if self.clip_grad < 0:
            raise ConfigError(f"policy.optimizer.clip_grad={self.clip_grad} must be >= 0 (0 disables clipping)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"policy.optimizer.lr_schedule={self.lr_schedule!r} is not a schedule; use one of: "
                f"{', '.join(LR_SCHEDULES)}"
            )
        if self.lr_warmup_steps < 0 or self.lr_decay_steps < 0:
            raise ConfigError(
                f"policy.optimizer.lr_warmup_steps={self.lr_warmup_steps} and policy.optimizer.lr_decay_steps="
                f"{self.lr_decay_steps} must be >= 0"
            )
        if self.lr_schedule != "constant" and self.lr_decay_steps <= self.lr_warmup_steps:
            raise ConfigError(
                f"policy.optimizer.lr_schedule={self.lr_schedule!r} decays over policy.optimizer.lr_decay_steps="
                f"{self.lr_decay_steps}, which must exceed policy.optimizer.lr_warmup_steps={self.lr_warmup_steps}; "
                "set policy.optimizer.lr_decay_steps to the number of optimizer steps of the run"
            )


@dataclass
class FP8Config:
    """Transformer Engine FP8 for the language model's linear layers (GPU only; the HF vision tower stays bf16).

    recipe: "delayed" (amax history, the classic recipe), "tensorwise" (alias "current": per-tensor current
    scaling), "blockwise" (1x128 / 128x128 block scaling, Hopper). `param_gather` keeps the parameters in FP8 and
    all-gathers them in FP8 (needs the distributed optimizer); it halves the parameter all-gather traffic.
    """

    enabled: bool = False
    recipe: str = "tensorwise"
    format: str = "hybrid"  # e4m3 forward, e5m2 gradients; "e4m3" for both
    amax_history_len: int = 1024  # delayed scaling only
    amax_compute_algo: str = "max"  # delayed scaling only: "max" or "most_recent"
    margin: int = 0
    param_gather: bool = False

    def __post_init__(self) -> None:
        self.recipe = FP8_RECIPE_ALIASES.get(self.recipe, self.recipe)
        if self.recipe not in FP8_RECIPES:
            names = ", ".join((*FP8_RECIPES, *FP8_RECIPE_ALIASES))
            raise ConfigError(f"policy.fp8.recipe={self.recipe!r} is not an FP8 recipe; use one of: {names}")
        if self.format not in FP8_FORMATS:
            raise ConfigError(f"policy.fp8.format={self.format!r} must be one of: {', '.join(FP8_FORMATS)}")
        if self.amax_history_len < 1:
            raise ConfigError(f"policy.fp8.amax_history_len={self.amax_history_len} must be >= 1")
        if self.amax_compute_algo not in ("max", "most_recent"):
            raise ConfigError(f"policy.fp8.amax_compute_algo={self.amax_compute_algo!r} must be 'max' or 'most_recent'")
        if self.margin < 0:
            raise ConfigError(f"policy.fp8.margin={self.margin} must be >= 0")
        if self.param_gather and not self.enabled:
            raise ConfigError("policy.fp8.param_gather=true needs policy.fp8.enabled=true")


@dataclass
class PolicyConfig:
    """The Megatron policy: which checkpoint, how it is computed, how it is optimised."""

    hf_path: str = ""  # Hugging Face checkpoint directory (config.json + safetensors); weights come from here
    # A Megatron checkpoint whose WEIGHTS replace hf_path's (e.g. an SFT run's): a run dir, a checkpoint dir
    # (step_N) or its policy/ dir; optimizer and schedule start fresh. hf_path still gives config and tokenizer.
    init_checkpoint: str = ""
    precision: str = "auto"  # "auto": bf16 on GPU, fp32 on CPU (CPU runs are parity and wiring runs)
    freeze_vision_model: bool = False  # the vision tower's patch embedding and blocks
    freeze_vision_projection: bool = False  # the vision merger (projection into the language model)
    micro_batch_size: int = 1  # sequences per micro-batch (gradients accumulate over micro-batches)
    max_seq_length: int = 8192  # prompt + response tokens (upstream: 6,144 + 2,048); checked against SP/CP
    temperature: float = 1.0  # log-probs of logits / temperature, as the sampler drew them
    reference: str = "cpu"  # "cpu": a CPU copy of the initial weights swapped in for ref log-probs; "none"
    # generation.placement=colocated: free the grads and move the optimizer state to host memory while vLLM
    # generates (models/qwen25_vl/offload.py). null: on when colocated; true under placement=apart is an error.
    offload_during_generation: bool | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    fp8: FP8Config = field(default_factory=FP8Config)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"policy.precision={self.precision!r} must be one of: {', '.join(PRECISIONS)}")
        if self.micro_batch_size < 1:
            raise ConfigError(f"policy.micro_batch_size={self.micro_batch_size} must be >= 1")
        if self.max_seq_length < 2:
            raise ConfigError(f"policy.max_seq_length={self.max_seq_length} must be >= 2")
        if not self.temperature > 0:
            raise ConfigError(f"policy.temperature={self.temperature} must be > 0")
        if self.reference not in REFERENCE_MODES:
            raise ConfigError(f"policy.reference={self.reference!r} must be one of: {', '.join(REFERENCE_MODES)}")
        if self.fp8.enabled and self.precision == "fp32":
            raise ConfigError("policy.fp8.enabled=true trains in bf16 with FP8 GEMMs; set policy.precision=bf16")
        if self.fp8.param_gather and not self.optimizer.use_distributed_optimizer:
            raise ConfigError(
                "policy.fp8.param_gather=true all-gathers FP8 parameters from the distributed optimizer; set "
                "policy.optimizer.use_distributed_optimizer=true or policy.fp8.param_gather=false"
            )
