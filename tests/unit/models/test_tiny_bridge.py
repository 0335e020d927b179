"""Megatron-Bridge reads the tiny Qwen2.5-VL checkpoint (the Megatron engineer's tests check logits parity)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemo_spatial.models.tiny import TINY


@pytest.mark.slow
def test_megatron_bridge_reads_the_checkpoint(tiny_model_dir: Path) -> None:
    from nemo_spatial.models.qwen25_vl.bridge import import_megatron_bridge
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig

    with cpu_compat.scoped(ParallelConfig()):  # the Transformer Engine stand-in for megatron.bridge (cpu_compat)
        import_megatron_bridge()
        from megatron.bridge import AutoBridge

        provider = AutoBridge.from_hf_pretrained(str(tiny_model_dir), dtype=torch.float32).to_megatron_provider(
            load_weights=False
        )
    assert (provider.hidden_size, provider.num_layers, provider.num_attention_heads) == (128, 2, 2)
    assert provider.num_query_groups == 2 and provider.vocab_size == TINY.vocab_size
