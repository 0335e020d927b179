"""Precision of the Megatron policy: bf16 / fp32, and Transformer Engine FP8 recipes for the language model.

`mixed_precision_config` turns `PolicyConfig` into Megatron-Bridge's `MixedPrecisionConfig` (the same object the
bridge's recipes use), whose `setup(provider, optimizer_config, ddp_config)` writes the dtype and FP8 fields into
the model, optimizer and DDP configs. FP8 applies to the Transformer Engine linear layers of the language model
only: the vision tower is Hugging Face's (torch.nn.Linear), which TE's fp8 autocast does not touch, so it stays
bf16. FP8 needs a GPU with Transformer Engine; `check_fp8_supported` fails at start-up with the fix otherwise
(blockwise scaling needs Hopper, compute capability 9.x; delayed / tensorwise need 8.9 or newer).
"""

from __future__ import annotations

from typing import Any

from nemo_spatial.errors import ConfigError
from nemo_spatial.models.qwen25_vl.config import FP8Config, PolicyConfig

# Lowest compute capability of each recipe in Transformer Engine (blockwise: Hopper only).
_MIN_CAPABILITY = {"delayed": (8, 9), "tensorwise": (8, 9), "blockwise": (9, 0)}
_MAX_CAPABILITY = {"blockwise": (9, 9)}


def fp8_fields(cfg: FP8Config) -> dict[str, Any]:
    """The Megatron-Core / Megatron-Bridge FP8 fields for `cfg` (empty when FP8 is off)."""
    if not cfg.enabled:
        return {}
    fields: dict[str, Any] = {
        "fp8": cfg.format,
        "fp8_recipe": cfg.recipe,
        "fp8_margin": cfg.margin,
        "fp8_param_gather": cfg.param_gather,
        "fp8_param": cfg.param_gather,
    }
    if cfg.recipe == "delayed":
        fields["fp8_amax_history_len"] = cfg.amax_history_len
        fields["fp8_amax_compute_algo"] = cfg.amax_compute_algo
    else:  # current / block scaling compute the scale from the tensor itself
        fields["fp8_amax_history_len"] = 1
        fields["fp8_amax_compute_algo"] = "most_recent"
    return fields


def check_fp8_supported(
    cfg: FP8Config, *, cuda_available: bool, transformer_engine: bool, capability: tuple[int, int] | None
) -> None:
    """Raise a ConfigError naming the fix when this machine cannot run `cfg`."""
    if not cfg.enabled:
        return
    if not cuda_available or not transformer_engine:
        raise ConfigError(
            "policy.fp8.enabled=true needs an NVIDIA GPU with Transformer Engine (FP8 GEMMs exist only there); "
            "set policy.fp8.enabled=false on this machine"
        )
    lowest = _MIN_CAPABILITY[cfg.recipe]
    highest = _MAX_CAPABILITY.get(cfg.recipe, (99, 99))
    if capability is None or not lowest <= capability <= highest:
        where = "Hopper (compute capability 9.x)" if cfg.recipe == "blockwise" else f"compute capability >= {lowest}"
        raise ConfigError(
            f"policy.fp8.recipe={cfg.recipe!r} needs {where}; this GPU has {capability}; use "
            "policy.fp8.recipe=tensorwise or delayed, or policy.fp8.enabled=false"
        )


def resolved_dtype_name(cfg: PolicyConfig, *, gpu: bool) -> str:
    """'bf16' or 'fp32': "auto" is bf16 on GPU, fp32 on CPU."""
    if cfg.precision == "auto":
        return "bf16" if gpu else "fp32"
    return cfg.precision


def mixed_precision_config(cfg: PolicyConfig, *, gpu: bool) -> Any:
    """Megatron-Bridge's MixedPrecisionConfig for `cfg` (bf16_mixed + FP8 fields, or fp32)."""
    from megatron.bridge.training.mixed_precision import MixedPrecisionConfig, bf16_mixed

    if resolved_dtype_name(cfg, gpu=gpu) == "fp32":
        import torch

        return MixedPrecisionConfig(
            fp32=True, params_dtype=torch.float32, pipeline_dtype=torch.float32, grad_reduce_in_fp32=True
        )
    mixed = bf16_mixed()
    for name, value in fp8_fields(cfg.fp8).items():
        setattr(mixed, name, value)
    return mixed
