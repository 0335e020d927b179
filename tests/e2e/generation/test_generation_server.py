"""The generation server end to end: real vLLM (CPU build), a real server process on 127.0.0.1, real syncs.

All tests share one server (session fixture). The last test kills it and checks that the death is
reported and that the restart policy brings it back on-policy, so it must stay last in this file.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
import torch

from nemo_spatial.generation import (
    GenerationRequest,
    GenerationRequestError,
    GeneratorRestartedError,
    GeneratorUnavailableError,
    SamplingConfig,
    StaleRolloutError,
)
from nemo_spatial.generation.client import ServerGenerator

from .conftest import chat_prompt, e2e_config, make_image

pytestmark = pytest.mark.slow

CONTINUATION = "There are two cars left of the tree."


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest("one-image", chat_prompt("How many cars are there?"), images=[make_image(0)]),
        GenerationRequest(
            "two-images", chat_prompt("Which is larger?", 2), images=[make_image(1), make_image(2, (56, 56))]
        ),
        GenerationRequest("text-only", chat_prompt("Say hello.", 0)),
    ]


def test_generates_n_samples_per_multimodal_prompt_reproducibly(generation_server, trainer_model) -> None:
    params = SamplingConfig(n=4, max_tokens=12, seed=1234)
    first = generation_server.generate(_requests(), params)
    assert [(r.prompt_id, r.sample_index) for r in first] == [
        (p, i) for p in ("one-image", "two-images", "text-only") for i in range(4)
    ]
    for rollout in first:
        assert rollout.ok and rollout.weight_version == generation_server.weight_version
        assert 1 <= len(rollout.token_ids) <= 12 and len(rollout.log_probs) == len(rollout.token_ids)
        assert all(lp <= 0.0 and lp > -50 for lp in rollout.log_probs)
        assert rollout.finish_reason in ("stop", "length")
    # Each image placeholder was expanded to its patches (84x112 px -> 3x4 tokens of 28x28 px).
    image_pad = trainer_model.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert first[0].prompt_token_ids.count(image_pad) == 12
    assert first[4].prompt_token_ids.count(image_pad) == 12 + 4
    groups = [[tuple(r.token_ids) for r in first[i * 4 : i * 4 + 4]] for i in range(3)]
    assert all(len(set(group)) > 1 for group in groups), "the n samples of a prompt must differ"
    again = generation_server.generate(_requests(), params)
    assert [(r.token_ids, r.log_probs) for r in again] == [(r.token_ids, r.log_probs) for r in first]
    other = generation_server.generate(_requests(), SamplingConfig(n=4, max_tokens=12, seed=99))
    assert [r.token_ids for r in other] != [r.token_ids for r in first]


def _server_log_probs(generator, text: str, images) -> tuple[list[int], torch.Tensor]:
    (rollout,) = generator.generate(
        [GenerationRequest("fixed", text, images=images)],
        SamplingConfig(n=1, max_tokens=1, prompt_logprobs=True, seed=0),
    )
    return rollout.prompt_token_ids, torch.tensor(rollout.prompt_logprobs[1:], dtype=torch.float32)


def test_sync_gives_the_trainer_models_log_probs_and_original_weights_restore_samples(
    generation_server, trainer_model
) -> None:
    images = [make_image(3)]
    text = chat_prompt("Where is the car?") + CONTINUATION
    inputs = trainer_model.inputs(text, images)
    version = generation_server.weight_version
    sample_params = SamplingConfig(n=3, max_tokens=10, seed=7)
    before = generation_server.generate(_requests()[:1], sample_params)

    trainer_model.perturb(seed=11)
    ids, stale = _server_log_probs(generation_server, text, images)
    assert ids == inputs["input_ids"][0].tolist(), "vLLM and the trainer must see the same expanded prompt"
    stale_diff = (stale - trainer_model.token_log_probs(inputs, 1)).abs().max().item()

    stats = generation_server.update_weights(trainer_model.named_hf_weights(), version + 1)
    assert stats.num_tensors == len(trainer_model.original) and stats.num_buckets >= 4
    _, synced = _server_log_probs(generation_server, text, images)
    sync_diff = (synced - trainer_model.token_log_probs(inputs, 1)).abs().max().item()
    print(f"\nfp32 log-prob max |vLLM - trainer|: stale {stale_diff:.3e}, after sync {sync_diff:.3e}")
    assert stale_diff > 1e-2, "the perturbation must be visible before the sync"
    assert sync_diff < 1e-4

    # Sampled-token log-probs are those of the distribution sampled from (vision tokens forbidden).
    (rollout, *_) = generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=8, seed=5))
    prompt = trainer_model.inputs(_requests()[0].prompt or "", _requests()[0].images)
    assert rollout.prompt_token_ids == prompt["input_ids"][0].tolist()
    full = trainer_model.extend(prompt, rollout.token_ids)
    expected = trainer_model.token_log_probs(full, len(rollout.prompt_token_ids), mask_vision=True)
    assert (torch.tensor(rollout.log_probs) - expected).abs().max().item() < 1e-4
    assert rollout.weight_version == version + 1

    trainer_model.restore()
    generation_server.update_weights(trainer_model.named_hf_weights(), version + 2)
    after = generation_server.generate(_requests()[:1], sample_params)
    assert [(r.token_ids, r.log_probs) for r in after] == [(r.token_ids, r.log_probs) for r in before]
    assert {r.weight_version for r in after} == {version + 2}


def test_rollouts_from_a_stale_version_are_refused(generation_server, trainer_model) -> None:
    version = generation_server.weight_version
    other_writer = ServerGenerator(generation_server.cfg, url=generation_server.url)
    other_writer.update_weights(trainer_model.named_hf_weights(), version + 1)
    with pytest.raises(StaleRolloutError, match=rf"weight version\(s\) \[{version + 1}\].*at version {version}"):
        generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=4))
    generation_server.update_weights(trainer_model.named_hf_weights(), version + 2)
    assert (
        generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=4))[0].weight_version == version + 2
    )


def test_bad_requests_are_answered_clearly_and_the_batch_goes_on(generation_server) -> None:
    batch = [
        GenerationRequest("too-long", chat_prompt("word " * 2000, 0)),
        GenerationRequest("missing-image", chat_prompt("What is this?")),
        GenerationRequest("good", chat_prompt("Say hi.", 0)),
    ]
    rollouts = generation_server.generate(batch, SamplingConfig(n=2, max_tokens=4))
    by_id = {r.prompt_id: r for r in rollouts if r.sample_index == 0}
    assert by_id["too-long"].error is not None and "maximum context length is 1024" in by_id["too-long"].error
    assert (
        by_id["missing-image"].error is not None
        and "0 image(s) but 1 image placeholder" in by_id["missing-image"].error
    )
    assert by_id["good"].ok and by_id["good"].token_ids
    url = generation_server.url
    unreadable = {"prompt_id": "bad-png", "prompt": chat_prompt("?"), "images": ["aGVsbG8="]}
    answer = requests.post(f"{url}/nemo/v1/generate", json={"requests": [unreadable], "sampling": {"n": 1}}, timeout=60)
    assert answer.status_code == 200 and "image bytes are not a readable image" in answer.json()["rollouts"][0]["error"]
    for body, message in [
        ({"requests": []}, "non-empty list"),
        ({"requests": [unreadable], "sampling": {"temprature": 0.3}}, "unknown sampling key"),
        ({"requests": [unreadable], "sampling": {"n": 0}}, "n=0 must be >= 1"),
    ]:
        answer = requests.post(f"{url}/nemo/v1/generate", json=body, timeout=60)
        assert answer.status_code == 400 and message in answer.json()["error"]
    with pytest.raises(GenerationRequestError, match="no weight sync in progress"):
        generation_server.control.update({"kind": "shm", "path": "/dev/shm/none.safetensors"})


def test_openai_chat_endpoint_serves_the_current_policy(generation_server) -> None:
    from nemo_spatial.generation.wire import encode_image

    image_url = f"data:image/png;base64,{encode_image(make_image(4))}"
    body = {
        "model": generation_server.health().model,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "Hi?"}],
            }
        ],
        "max_tokens": 5,
    }
    answer = requests.post(f"{generation_server.url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] >= 1


def test_broadcast_sync_over_gloo_loads_the_same_weights_as_shm(generation_server, trainer_model) -> None:
    version = generation_server.weight_version
    trainer_model.perturb(seed=21)
    generation_server.update_weights(trainer_model.named_hf_weights(), version + 1)
    shm_digest = generation_server.weight_digest()
    trainer_model.restore()
    generation_server.update_weights(trainer_model.named_hf_weights(), version + 2)
    assert generation_server.weight_digest() != shm_digest

    generation_server.use_broadcast("gloo")  # the NCCL transport's protocol, on CPU
    try:
        trainer_model.perturb(seed=21)
        stats = generation_server.update_weights(trainer_model.named_hf_weights(), version + 3)
        assert stats.num_buckets >= 4 and generation_server.weight_digest() == shm_digest
    finally:
        generation_server._transport.close()
        generation_server._transport = None
        trainer_model.restore()
    generation_server.update_weights(trainer_model.named_hf_weights(), version + 4)


def test_slurms_early_warning_signal_leaves_the_server_serving(generation_server) -> None:
    """SLURM's `--signal=USR1@T` reaches every process of the step; the trainer needs the server to checkpoint."""
    os.killpg(generation_server.process.pid, signal.SIGUSR1)  # the server and its vLLM engine processes
    time.sleep(1.0)
    assert generation_server.process.alive() and generation_server.health().ok
    rollouts = generation_server.generate(_requests()[:1], SamplingConfig(n=1, max_tokens=3))
    assert rollouts[0].ok


def test_server_death_is_reported_then_the_restart_policy_recovers(generation_server, trainer_model) -> None:
    """Keep last: it kills the session's server (the restart policy leaves a working one behind)."""
    trainer_model.perturb(seed=31)
    version = generation_server.weight_version + 1
    generation_server.update_weights(trainer_model.named_hf_weights(), version)
    expected = generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=6, seed=3))

    stopping = ServerGenerator(e2e_config(on_server_death="stop"), process=generation_server.process)
    stopping._version = version
    os.killpg(generation_server.process.pid, signal.SIGKILL)
    generation_server.process.proc.wait(timeout=30)
    health = stopping.health()
    assert not health.ok and "exited with code -9" in health.detail
    started = time.monotonic()
    with pytest.raises(GeneratorUnavailableError, match="exited with code -9") as error:
        stopping.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=6))
    assert time.monotonic() - started < 30, "a dead server must be detected at once, not after the request timeout"
    assert "generation server log (tail)" in str(error.value) and "EngineCore" in error.value.log_tail

    # The restart policy restarts the server from its checkpoint and says so; the loop's refit pushes the weights.
    with pytest.raises(GeneratorRestartedError, match=f"push weight version {version} again"):
        generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=6, seed=3))
    assert generation_server.process.starts == 2 and generation_server.weight_version == 0
    generation_server.update_weights(trainer_model.named_hf_weights(), version)
    recovered = generation_server.generate(_requests()[:1], SamplingConfig(n=2, max_tokens=6, seed=3))
    assert generation_server.health().weight_version == version
    assert [r.token_ids for r in recovered] == [r.token_ids for r in expected]
    trainer_model.restore()
