"""Two spawned generation servers (real vLLM CPU build, tiny Qwen2.5-VL) behind the router, built the way the
trainer builds its generator (`build_generator` with generation.num_servers=2, placement=colocated).

One test, in the order a run meets it: both servers wake, take the weight push (each server's version and
weight digest read back), and serve rollouts; they sleep after the phase (a request to a sleeping server is
refused) and wake again; a server killed under on_server_death=restart has its groups served by the other
while it restarts, and the next refit re-syncs that one server only.
"""

from __future__ import annotations

import os
import signal

import pytest

from nemo_spatial.generation import GenerationRequest, GenerationRequestError, SamplingConfig, build_generator
from nemo_spatial.generation.router import RouterGenerator

from .conftest import chat_prompt, e2e_config, make_image

pytestmark = pytest.mark.slow


def _requests(count: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(f"p{i}", chat_prompt(f"How many cars are in picture {i}?"), images=[make_image(i)])
        for i in range(count)
    ]


def test_two_servers_share_rollouts_take_weights_sleep_and_survive_a_killed_one(
    tiny_model_dir, trainer_model, tmp_path, monkeypatch, vllm_cache_env
) -> None:
    for key, value in vllm_cache_env.items():
        monkeypatch.setenv(key, value)
    cfg = e2e_config(num_servers=2, placement="colocated", kv_cache_gb=0.125, max_num_seqs=8, max_restarts=1)
    router = build_generator(cfg, str(tiny_model_dir), tmp_path)
    assert isinstance(router, RouterGenerator)
    params = SamplingConfig(n=2, max_tokens=6)
    try:
        members = [s.member for s in router.servers]
        assert len({m.url for m in members}) == 2
        before = [m.weight_digest() for m in members]
        trainer_model.perturb(seed=5)
        router.prepare_for_generation()
        router.update_weights(trainer_model.named_hf_weights(), 1)
        assert [m.health().weight_version for m in members] == [1, 1]  # each server's own report
        after = [m.weight_digest() for m in members]
        assert after[0] == after[1] != before[0]
        rollouts = router.generate(_requests(8), params)
        assert len(rollouts) == 16 and all(r.ok and r.weight_version == 1 for r in rollouts)
        metrics = router.release_memory()  # colocated: both servers sleep now
        assert metrics["generation/server0_groups"] > 0 and metrics["generation/server1_groups"] > 0
        assert metrics["generation/sleep_s"] >= 0 and "generation/tail_s" in metrics
        with pytest.raises(GenerationRequestError, match="asleep"):
            members[0].generate(_requests(1), params)
        assert "generation/wake_s" in router.prepare_for_generation()

        os.killpg(members[0].process.pid, signal.SIGKILL)  # type: ignore[union-attr,arg-type]
        members[0].process.proc.wait(timeout=30)  # type: ignore[union-attr]
        rollouts = router.generate(_requests(6), params)
        assert len(rollouts) == 12 and all(r.ok and r.weight_version == 1 for r in rollouts)
        metrics = router.release_memory()
        assert metrics["generation/server0_groups"] == 0 and metrics["generation/server1_groups"] == 6
        router.prepare_for_generation()
        router._wait_restarts()
        assert members[0].process.starts == 2 and router.weight_version == 0  # type: ignore[union-attr]
        router.update_weights(trainer_model.named_hf_weights(), 1)  # the refit: only the restarted one lags
        assert [m.health().weight_version for m in members] == [1, 1]
        assert members[0].weight_digest() == after[1]
        router.generate(_requests(8), params)
        assert router.release_memory()["generation/server0_groups"] > 0
    finally:
        router.close()
        trainer_model.restore()
