"""Qwen2.5-VL as a Megatron model, built by Megatron-Bridge from a Hugging Face checkpoint directory.

    loaded = load_model(policy_cfg, layout, ddp_config)   # after nemo_spatial.parallel.state.initialize
    loaded.chunks         # [Qwen25VLModel] (wrapped in Megatron DDP when ddp_config is given)
    loaded.bridge         # the AutoBridge: HF <-> Megatron weight conversion (export_hf_weights)

Choices and departures from the bridge's defaults:
- Layer spec: Transformer Engine's on GPU (where TE is installed), Megatron's local (torch) spec otherwise.
- mRoPE sections come from the HF config (`rope_parameters` / `rope_scaling` `mrope_section`); the bridge keeps
  [16, 24, 24], which is right only for head dim 128 (Qwen2.5-VL-3B/7B) and wrong for any other.
- On CPU: `use_cpu_initialization`, and every fused kernel off (they exist only on GPU).
- Loss normalisation is the caller's (`calculate_per_token_loss=True`: Megatron neither divides the loss by the
  number of micro-batches nor averages gradients over data-parallel ranks; see forward.py).
- Sequence parallel with the local spec: layer_spec.py (torch norms tagged `sequence_parallel`, which
  Megatron's own local norm refuses).
- Transformer Engine is optional: `megatron.bridge.peft.lora_layers` imports it at module level; the stand-in
  that module sees while it executes is part of the CPU mode (`nemo_spatial.parallel.cpu_compat`, switched on
  by the entry point), and `import_megatron_bridge()` refuses, with the fix, when it is off and TE is missing.
"""

from __future__ import annotations

import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemo_spatial.errors import ConfigError
from nemo_spatial.models.qwen25_vl.config import PolicyConfig
from nemo_spatial.parallel import cpu_compat
from nemo_spatial.parallel.layout import Layout, check_model_fits
from nemo_spatial.parallel.state import transformer_engine_available

_CPU_FUSIONS_OFF = (
    "gradient_accumulation_fusion",
    "bias_dropout_fusion",
    "bias_activation_fusion",
    "masked_softmax_fusion",
    "apply_rope_fusion",
    "persist_layer_norm",
)


@dataclass
class LoadedModel:
    """The model chunks of this rank, the provider (its TransformerConfig) and the bridge that converts weights."""

    chunks: list[Any]
    provider: Any
    bridge: Any


def import_megatron_bridge() -> types.ModuleType:
    """`import megatron.bridge`; without TE it needs the entry point's `cpu_compat.activate` (its TE stand-in)."""
    needs_stand_in = "megatron.bridge" not in sys.modules and cpu_compat.needs_transformer_engine_stand_in()
    cpu_compat.require_transformer_engine_stand_in()
    if needs_stand_in:
        # Without TE the bridge logs a full traceback at INFO for each optional TE symbol it probes (expected
        # here); a filter, because the module resets its logger's level to INFO when it is imported.
        logging.getLogger("megatron.bridge.utils.import_utils").addFilter(
            lambda record: record.levelno >= logging.WARNING
        )
    import megatron.bridge

    return megatron.bridge


def hf_mrope_section(hf_config: Any) -> list[int]:
    """The text model's mRoPE sections (temporal, height, width) from a Qwen2.5-VL HF config."""
    text_config = getattr(hf_config, "text_config", hf_config)
    for key in ("rope_parameters", "rope_scaling"):
        params = getattr(text_config, key, None) or getattr(hf_config, key, None) or {}
        if isinstance(params, dict) and params.get("mrope_section"):
            return [int(x) for x in params["mrope_section"]]
    raise ConfigError(
        f"policy.hf_path: the Hugging Face config {getattr(hf_config, 'name_or_path', '')!r} has no mrope_section "
        "in text_config.rope_parameters or rope_scaling; it is not a Qwen2.5-VL checkpoint"
    )


def use_gpu() -> bool:
    return torch.cuda.is_available()


def make_provider(hf_path: str | Path, cfg: PolicyConfig, layout: Layout, *, load_weights: bool = True) -> tuple:
    """(provider, bridge): the bridge's Qwen25VLModelProvider configured for this layout, precision and machine."""
    path = Path(hf_path)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"policy.hf_path={str(hf_path)!r} is not a Hugging Face checkpoint directory (no config.json)"
        )
    import_megatron_bridge()
    from megatron.bridge import AutoBridge
    from megatron.bridge.models.gpt_provider import transformer_engine_layer_spec

    from nemo_spatial.models.qwen25_vl.layer_spec import local_block_spec

    bridge = AutoBridge.from_hf_pretrained(str(path), dtype="auto")  # the checkpoint's own dtype: no widening copy
    provider = bridge.to_megatron_provider(load_weights=load_weights)
    check_model_fits(
        layout,
        num_layers=provider.num_layers,
        num_attention_heads=provider.num_attention_heads,
        num_query_groups=provider.num_query_groups or provider.num_attention_heads,
    )
    provider.tensor_model_parallel_size = layout.tensor
    provider.pipeline_model_parallel_size = layout.pipeline
    provider.context_parallel_size = layout.context
    provider.sequence_parallel = layout.sequence_parallel
    provider.mrope_section = hf_mrope_section(bridge.hf_pretrained.config)
    provider.freeze_vision_model = cfg.freeze_vision_model
    provider.freeze_vision_projection = cfg.freeze_vision_projection
    provider.seq_length = cfg.max_seq_length
    # The caller normalises the loss globally (see forward.py); Megatron must not rescale it.
    provider.calculate_per_token_loss = True
    # Under PP each micro-batch keeps its own padded length; the schedules exchange shapes first.
    provider.variable_seq_lengths = layout.pipeline > 1
    if provider.variable_seq_lengths and not provider.num_moe_experts:
        # Megatron rejects variable lengths with the (default) allgather MoE dispatcher even without experts.
        provider.moe_token_dispatcher_type = "alltoall"
    if transformer_engine_available():
        provider.transformer_layer_spec = transformer_engine_layer_spec
    else:
        provider.transformer_layer_spec = local_block_spec
    if not use_gpu():
        provider.use_cpu_initialization = True
        for name in _CPU_FUSIONS_OFF:
            setattr(provider, name, False)
    _apply_precision(provider, cfg)
    return provider, bridge


def _apply_precision(provider: Any, cfg: PolicyConfig) -> None:
    from nemo_spatial.models.qwen25_vl.fp8 import mixed_precision_config

    mixed_precision_config(cfg, gpu=use_gpu()).setup(provider)


def load_model(
    cfg: PolicyConfig,
    layout: Layout,
    ddp_config: Any | None = None,
    hf_path: str | None = None,
    load_weights: bool = True,
) -> LoadedModel:
    """Build this rank's model chunks with the HF weights converted and sharded by the bridge.

    `load_weights=False` initialises randomly from the HF config alone (benchmarks of a model shape).
    """
    provider, bridge = make_provider(hf_path or cfg.hf_path, cfg, layout, load_weights=load_weights)
    provider.finalize()
    chunks = provider.provide_distributed_model(
        ddp_config=ddp_config,
        wrap_with_ddp=ddp_config is not None,
        use_cpu_initialization=not use_gpu(),
        bf16=provider.bf16,
        fp16=False,
    )
    return LoadedModel(chunks=chunks, provider=provider, bridge=bridge)
