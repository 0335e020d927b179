"""The in-process implementation of the generator: a `vllm.LLM` owned by the test process (one engine start)."""

from __future__ import annotations

import pytest
import torch

from nemo_spatial.generation import GenerationRequest, SamplingConfig

from .conftest import CONTINUATION, chat_prompt, e2e_config, make_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inprocess_generator(tiny_model_dir, vllm_cache_env, monkeypatch_module):
    from nemo_spatial.generation.inprocess import InProcessGenerator

    for key, value in vllm_cache_env.items():
        monkeypatch_module.setenv(key, value)
    generator = InProcessGenerator(e2e_config(mode="inprocess", on_server_death="stop"), str(tiny_model_dir))
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_inprocess_generation_sync_parity_and_bad_prompts(inprocess_generator, trainer_model) -> None:
    generator = inprocess_generator
    requests = [
        GenerationRequest("image", chat_prompt("How many cars?"), images=[make_image(0)]),
        GenerationRequest("missing-image", chat_prompt("What is this?")),
        GenerationRequest("too-long", chat_prompt("word " * 2000, 0)),
    ]
    params = SamplingConfig(n=3, max_tokens=8, seed=42)
    first = generator.generate(requests, params)
    assert [r.prompt_id for r in first] == ["image"] * 3 + ["missing-image"] * 3 + ["too-long"] * 3
    assert all(r.ok and r.token_ids for r in first[:3]) and len({tuple(r.token_ids) for r in first[:3]}) > 1
    assert "0 image(s) but 1 image placeholder" in (first[3].error or "")
    assert "maximum context length" in (first[6].error or "")
    assert [r.token_ids for r in generator.generate(requests, params)] == [r.token_ids for r in first]

    text = chat_prompt("Where is the car?") + CONTINUATION
    inputs = trainer_model.inputs(text, [make_image(3)])
    trainer_model.perturb(seed=41)
    try:
        stats = generator.update_weights(trainer_model.named_hf_weights(), version=1)
        assert generator.weight_version == 1 and stats.num_buckets >= 4
        fixed = GenerationRequest("fixed", text, images=[make_image(3)])
        (rollout,) = generator.generate([fixed], SamplingConfig(n=1, max_tokens=1, prompt_logprobs=True))
        assert rollout.weight_version == 1 and rollout.prompt_token_ids == inputs["input_ids"][0].tolist()
        served = torch.tensor(rollout.prompt_logprobs[1:], dtype=torch.float32)
        diff = (served - trainer_model.token_log_probs(inputs, 1)).abs().max().item()
        print(f"\nin-process fp32 log-prob max |vLLM - trainer| after sync: {diff:.3e}")
        assert diff < 1e-4
    finally:
        trainer_model.restore()
    generator.update_weights(trainer_model.named_hf_weights(), version=2)
    restored = generator.generate(requests[:1], params)
    assert [r.token_ids for r in restored] == [r.token_ids for r in first[:3]]
    assert generator.health().ok and generator.health().weight_version == 2
