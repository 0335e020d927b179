"""placement=colocated for real: a spawned CUDA vLLM server sleeps (weights offloaded, KV cache freed) and wakes.

On CPU the same calls only pause and resume the scheduler (vLLM's CPU build has no sleep mode; the order and
the refusal while asleep are tested in tests/e2e/generation/test_router_servers.py). Here the GPU memory the
server releases and the cycle's seconds are measured and printed, and the woken server must generate the same
greedy tokens as before it slept.
"""

from __future__ import annotations

import time

import pytest
import torch

from nemo_spatial.generation import GenerationConfig, GenerationRequest, SamplingConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's sleep mode needs CUDA (none visible here)"),
]


def _cuda_vllm() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_sleep_mode_available())


def test_colocated_server_releases_gpu_memory_asleep_and_serves_the_same_after_waking(tiny_model_dir, tmp_path):
    if not _cuda_vllm():
        pytest.skip("the installed vLLM is not the CUDA build (no sleep mode on this platform)")
    from nemo_spatial.generation.client import ServerGenerator

    cfg = GenerationConfig(
        placement="colocated", dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=0.3, enforce_eager=True
    )
    server = ServerGenerator.launch(cfg, str(tiny_model_dir), tmp_path)
    request = [GenerationRequest("p", prompt_token_ids=[9707, 11, 1879, 0])]
    greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=8)
    try:
        before = server.generate(request, greedy)[0].token_ids
        free_awake = torch.cuda.mem_get_info()[0]
        started = time.perf_counter()
        slept = server.release_memory()
        free_asleep = torch.cuda.mem_get_info()[0]
        woke = server.prepare_for_generation()
        cycle = time.perf_counter() - started
        released = (free_asleep - free_awake) / 1024**3
        print(f"sleep {slept['generation/sleep_s']:.2f} s, wake {woke['generation/wake_s']:.2f} s, "
              f"cycle {cycle:.2f} s, GPU memory released {released:.2f} GiB")  # fmt: skip
        assert released > 0.5  # the KV cache of 30% of the GPU at least
        assert server.generate(request, greedy)[0].token_ids == before
    finally:
        server.close()
