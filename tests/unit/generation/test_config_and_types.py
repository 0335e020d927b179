"""GenerationConfig validation, the request type, the wire format and stale-version refusal."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.generation import (
    GenerationConfig,
    GenerationRequest,
    Rollout,
    SamplingConfig,
    StaleRolloutError,
    require_version,
)
from nemo_spatial.generation.wire import decode_request, decode_sampling, encode_request, encode_sampling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "remote"}, "generation.mode='remote' is not valid"),
        ({"transport": "rdma"}, "generation.transport='rdma'"),
        ({"mode": "inprocess", "url": "http://127.0.0.1:8000"}, "mode=inprocess builds its own engine"),
        ({"url": "127.0.0.1:8000"}, "must start with http://"),
        ({"bucket_mb": 0}, "bucket_mb=0"),
        ({"on_server_death": "restart", "url": "http://10.0.0.2:8000"}, "on_server_death=restart needs a server"),
        ({"on_server_death": "restart", "urls": ["http://a:1", "http://b:1"]}, "or clear generation.urls"),
        ({"placement": "colocated", "urls": ["http://a:1", "http://b:1"]}, "Use generation.placement=apart"),
        ({"placement": "colocated", "mode": "inprocess"}, "needs generation.mode=server"),
        ({"health_interval_s": 0}, "generation.health_interval_s=0 must be > 0"),
        ({"mode": "inprocess", "transport": "nccl"}, "use generation.transport=shm"),
        ({"transport": "nccl", "url": "http://10.0.0.2:8000"}, "with the server on 10.0.0.2 needs"),
        ({"transport": "nccl", "urls": ["http://127.0.0.1:1", "http://10.0.0.3:8000"]}, "server on 10.0.0.3 needs"),
        ({"max_model_len": 1024, "sampling": SamplingConfig(max_tokens=2048)}, "leaves no room for the prompt"),
    ],
)
def test_generation_config_rejects_with_the_fix(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GenerationConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "generation.sampling.n=0"),
        ({"top_p": 0.0}, "generation.sampling.top_p=0.0"),
        ({"temperature": -1.0}, "generation.sampling.temperature"),
        ({"top_k": 0}, "generation.sampling.top_k"),
    ],
)
def test_sampling_config_rejects(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**kwargs)


def test_sampling_messages_name_the_full_key_of_either_section() -> None:
    with pytest.raises(ConfigError, match=r"^generation\.val_sampling\.n=0 must be >= 1"):
        load_config(None, ["generation.val_sampling.n=0"])
    with pytest.raises(ConfigError, match=r"^generation\.sampling\.max_tokens=0 must be >= 1"):
        load_config(None, ["generation.sampling.max_tokens=0"])


def test_nccl_to_a_local_server_or_with_an_address_is_accepted() -> None:
    GenerationConfig(transport="nccl")  # a server this process spawns on 127.0.0.1
    GenerationConfig(transport="nccl", url="http://localhost:8000")
    GenerationConfig(transport="nccl", url="http://10.0.0.2:8000", nccl_master_address="10.0.0.1")


def test_defaults_match_the_recipe() -> None:
    cfg = GenerationConfig()
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.top_p, cfg.sampling.max_tokens) == (
        8,
        1.0,
        1.0,
        2048,
    )
    assert cfg.val_sampling.temperature == 0.5
    assert cfg.host == "127.0.0.1" and cfg.transport == "shm"


def test_root_config_carries_generation(repo_root) -> None:
    cfg = load_config(repo_root / "conf/base.yaml", ["generation.bucket_mb=64", "generation.sampling.n=4"])
    assert cfg.generation.bucket_mb == 64 and cfg.generation.sampling.n == 4
    with pytest.raises(ConfigError, match="generation.transport"):
        load_config(repo_root / "conf/base.yaml", ["generation.transport=carrier-pigeon"])


def test_request_needs_exactly_one_prompt_form() -> None:
    with pytest.raises(ValueError, match="exactly one of prompt"):
        GenerationRequest("p0")
    with pytest.raises(ValueError, match="exactly one of prompt"):
        GenerationRequest("p0", prompt="hi", prompt_token_ids=[1, 2])
    with pytest.raises(ValueError, match="prompt_token_ids is empty"):
        GenerationRequest("p0", prompt_token_ids=[])


def test_request_wire_round_trip_keeps_pixels() -> None:
    pixels = (np.random.default_rng(0).random((30, 41, 3)) * 255).astype("uint8")
    request = GenerationRequest(
        "p7", prompt="<|vision_start|><|image_pad|><|vision_end|>hi", images=[Image.fromarray(pixels)]
    )
    decoded, prompt_id, problem = decode_request(encode_request(request), 0)
    assert problem is None and prompt_id == "p7" and decoded is not None
    assert decoded.prompt == request.prompt
    assert np.array_equal(np.asarray(decoded.images[0]), pixels)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"prompt_id": "x", "prompt": "hi", "images": ["not base64!"]}, "image 0: image is not valid base64"),
        ({"prompt_id": "x", "prompt": "hi", "images": ["aGVsbG8="]}, "image 0: image bytes are not a readable image"),
        ({"prompt_id": "x"}, "exactly one of prompt"),
        ({"prompt_id": "x", "prompt_token_ids": ["a"]}, "must be a list of integers"),
        ("just text", "must be a JSON object"),
    ],
)
def test_bad_wire_requests_become_errors_not_exceptions(item, message) -> None:
    request, _, problem = decode_request(item, 3)
    assert request is None and problem is not None and message in problem


def test_sampling_wire_names_unknown_keys() -> None:
    params = SamplingConfig(n=3, seed=5, stop=["</answer>"])
    assert decode_sampling(encode_sampling(params)) == params
    with pytest.raises(ConfigError, match="unknown sampling key"):
        decode_sampling({"temprature": 1.0})


def _rollout(version: int, error: str | None = None) -> Rollout:
    return Rollout("p", 0, [1], [-0.1], version, "stop", error=error)


def test_require_version_refuses_stale_rollouts() -> None:
    require_version([_rollout(3), _rollout(3), _rollout(0, error="too long")], 3)
    with pytest.raises(StaleRolloutError, match=r"1 of 2 rollouts were sampled with weight version\(s\) \[2\]"):
        require_version([_rollout(3), _rollout(2)], 3)
