"""Megatron DDP, the (distributed) AdamW optimizer, the learning-rate schedule, and one guarded optimizer step.

Gradient reduction: the loss handed to backward is each micro-batch's share of the GLOBAL loss (the loss function
divides by global token / sequence counts, see forward.py), so gradients must be SUMMED over data-parallel ranks,
not averaged. `calculate_per_token_loss=True` in the model config makes Megatron DDP use a gradient scaling
factor of 1 (sum), and `finalize_grads` calls `finalize_model_grads` without a token count so nothing divides
afterwards. Weight decay: every parameter, biases and norm weights included, as upstream's FSDP AdamW does
(`decay_biases_and_norms=True`, the default; False gives Megatron-LM's exemption of biases and 1-D weights).
Megatron's defaults otherwise: grads reduced in fp32, AdamW states in fp32.

`optimizer_step` clips at `clip_grad` and SKIPS the update when the global grad norm is not finite (Megatron's
bf16 optimizer would otherwise apply it: only its fp16 loss scaler checks for inf/nan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from nemo_spatial.models.qwen25_vl.config import OptimizerConfig


def ddp_config(cfg: OptimizerConfig, *, fp8_param_gather: bool = False) -> Any:
    from megatron.core.distributed import DistributedDataParallelConfig

    return DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        overlap_param_gather=False,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
        check_for_nan_in_grad=False,  # a non-finite norm skips the step instead of killing the job
        average_in_collective=False,
        fp8_param_gather=fp8_param_gather,
    )


def build_optimizer(cfg: OptimizerConfig, chunks: list[Any], model_config: Any) -> tuple[Any, Any]:
    """(MegatronOptimizer, OptimizerParamScheduler) for the DDP-wrapped model chunks."""
    from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    megatron_cfg = MegatronOptimizerConfig(
        optimizer="adam",
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_eps=cfg.adam_eps,
        clip_grad=cfg.clip_grad,
        bf16=bool(model_config.bf16),
        fp16=False,
        params_dtype=model_config.params_dtype,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
    )
    # {} = no per-group overrides: every parameter decays, as upstream; None = Megatron's exemptions.
    overrides: dict[Any, Any] | None = {} if cfg.decay_biases_and_norms else None
    optimizer = get_megatron_optimizer(megatron_cfg, chunks, config_overrides=overrides)
    _create_adam_states(optimizer)
    decay_steps = cfg.lr_decay_steps if cfg.lr_schedule != "constant" else cfg.lr_warmup_steps + 1
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if cfg.lr_warmup_steps > 0 else cfg.lr,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=cfg.lr_warmup_steps,
        lr_decay_steps=max(decay_steps, 1),
        lr_decay_style=cfg.lr_schedule,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=max(decay_steps, 1),
        wd_incr_style="constant",
    )
    return optimizer, scheduler


def sub_optimizers(optimizer: Any) -> list[Any]:
    """The Megatron optimizers inside `optimizer`: a ChainedOptimizer's parts, or the optimizer itself."""
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def _create_adam_states(optimizer: Any) -> None:
    """Allocate AdamW's zero moments and step counter now rather than at the first step.

    A fresh state and an all-zero state give the same first step, but only the latter can be checkpointed:
    Megatron's distributed optimizer cannot save an optimizer that has never stepped (it reads the step count).
    """
    for sub in sub_optimizers(optimizer):
        inner = getattr(sub, "optimizer", None)
        if inner is None:
            continue
        if getattr(sub, "init_state_fn", None) is not None:
            sub.init_state_fn(inner, sub.config)
        if isinstance(inner, torch.optim.AdamW | torch.optim.Adam):
            for group in inner.param_groups:
                for param in group["params"]:
                    inner.state[param].setdefault("step", torch.tensor(0.0))


def install_grad_hooks(chunks: list[Any], model_config: Any) -> None:
    """Point the pipeline schedules at DDP's no_sync and at gradient finalisation without 1/num_tokens."""
    from megatron.core.distributed import finalize_model_grads

    def finalize_grads(model: list[Any], num_tokens: Any = None, **kwargs: Any) -> None:
        finalize_model_grads(model, num_tokens=None, **kwargs)

    no_sync = [chunk.no_sync for chunk in chunks]
    model_config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    model_config.finalize_model_grads_func = finalize_grads
    model_config.grad_scale_func = None


@dataclass
class StepResult:
    grad_norm: float
    skipped: bool
    lr: float


def zero_grads(chunks: list[Any], optimizer: Any) -> None:
    for chunk in chunks:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()


def optimizer_step(optimizer: Any, scheduler: Any) -> StepResult:
    """Clip, check the global grad norm, and step (or skip when the norm is inf/nan)."""
    lr = float(optimizer.param_groups[0]["lr"])
    found_inf = optimizer.prepare_grads()
    grad_norm = float(optimizer.get_grad_norm())
    if found_inf or not math.isfinite(grad_norm):
        return StepResult(grad_norm=grad_norm, skipped=True, lr=lr)
    # step() repeats prepare_grads (an idempotent copy into the main grads) and clips by the same norm.
    success, _, _ = optimizer.step()
    if success:
        scheduler.step(increment=1)
    return StepResult(grad_norm=grad_norm, skipped=not success, lr=lr)


def parameters_finite(chunks: list[Any]) -> bool:
    return all(bool(torch.isfinite(p).all()) for chunk in chunks for p in chunk.parameters())
