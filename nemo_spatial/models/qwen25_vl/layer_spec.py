"""The language model's layer spec without Transformer Engine (CPU), with sequence parallelism allowed.

Megatron's local spec builds its norms with `WrappedTorchNorm`, which refuses sequence parallelism: a torch norm
does not mark its parameters `sequence_parallel`, so `finalize_model_grads` would not sum their gradients over the
TP ranks (each rank sees only its slice of the sequence). `SequenceParallelTorchNorm` is the same torch norm with
that mark, and `local_block_spec` is Megatron-Bridge's local spec with it in every norm slot, the final norm
included. With sequence parallelism off it is exactly the local spec.
"""

from __future__ import annotations

from typing import Any

import torch


class SequenceParallelTorchNorm:
    """torch.nn.RMSNorm / LayerNorm whose parameters carry `sequence_parallel` = config.sequence_parallel."""

    def __new__(cls, config: Any, hidden_size: int, eps: float = 1e-5, **unused: Any) -> torch.nn.Module:  # type: ignore[misc]
        if config.normalization == "RMSNorm":
            norm: torch.nn.Module = torch.nn.RMSNorm(hidden_size, eps=eps)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization {config.normalization!r} is not supported by the local spec")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel  # type: ignore[attr-defined]
        return norm


def local_block_spec(config: Any, vp_stage: int | None = None) -> Any:
    """TransformerBlockSubmodules: this stage's layers (local spec) and final norm, all norms SP-capable."""
    from megatron.bridge.models.gpt_provider import local_layer_spec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    layer = local_layer_spec(config)
    layer.submodules.input_layernorm = SequenceParallelTorchNorm
    layer.submodules.pre_mlp_layernorm = SequenceParallelTorchNorm
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=SequenceParallelTorchNorm)
