"""Prompt checks, per-prompt seeds and sampling parameters (the engine-facing half, without an engine)."""

from __future__ import annotations

import pytest
from PIL import Image

from nemo_spatial.generation.config import SamplingConfig
from nemo_spatial.generation.engine_io import (
    FORBIDDEN_TOKEN_BIAS,
    check_request,
    error_rollouts,
    request_seed,
    to_engine_prompt,
)
from nemo_spatial.generation.types import IMAGE_PLACEHOLDER, GenerationRequest

VISION = {"<|vision_start|>": 10, "<|vision_end|>": 11, "<|vision_pad|>": 12, "<|image_pad|>": 13, "<|video_pad|>": 14}
IMAGE = Image.new("RGB", (56, 56), "red")


@pytest.mark.parametrize(
    ("prompt", "images", "problem"),
    [
        (f"{IMAGE_PLACEHOLDER}What is left of the car?", [IMAGE], None),
        (f"{IMAGE_PLACEHOLDER}{IMAGE_PLACEHOLDER}Compare.", [IMAGE, IMAGE], None),
        ("No image here.", [], None),
        (f"{IMAGE_PLACEHOLDER}What is this?", [], "has 0 image(s) but 1 image placeholder(s)"),
        ("Describe.", [IMAGE], "has 1 image(s) but 0 image placeholder(s)"),
        ("<|vision_start|><|video_pad|><|vision_end|>", [], "video prompts are not supported"),
    ],
)
def test_text_prompts_must_match_their_images(prompt, images, problem) -> None:
    found = check_request(GenerationRequest("q1", prompt=prompt, images=images), VISION)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "'q1'" in found


def test_token_prompts_count_placeholders_by_id() -> None:
    ok = GenerationRequest("t", prompt_token_ids=[1, 10, 13, 11, 2], images=[IMAGE])
    assert check_request(ok, VISION) is None
    missing = GenerationRequest("t", prompt_token_ids=[1, 10, 13, 11, 2])
    assert "1 image placeholder" in (check_request(missing, VISION) or "")


def test_engine_prompt_carries_images_only_when_present() -> None:
    assert to_engine_prompt(GenerationRequest("a", prompt="hi")) == {"prompt": "hi"}
    prompt = to_engine_prompt(GenerationRequest("a", prompt=IMAGE_PLACEHOLDER, images=[IMAGE]))
    assert prompt["multi_modal_data"]["image"] == [IMAGE]


def test_request_seeds_differ_per_prompt_and_repeat_per_seed() -> None:
    seeds = [request_seed(7, f"p{i}", i) for i in range(200)]
    assert len(set(seeds)) == 200 and all(s is not None and 0 <= s < 2**62 for s in seeds)
    assert seeds == [request_seed(7, f"p{i}", i) for i in range(200)]
    assert request_seed(8, "p0", 0) != seeds[0]
    assert request_seed(None, "p0", 0) is None


def test_sampling_params_forbid_vision_tokens_and_ask_for_log_probs() -> None:
    pytest.importorskip("vllm")
    from nemo_spatial.generation.engine_io import to_sampling_params

    params = to_sampling_params(SamplingConfig(n=4, temperature=0.7, max_tokens=32, stop=["</answer>"]), VISION, 11)
    assert params.n == 4 and params.seed == 11 and params.logprobs == 0 and params.prompt_logprobs is None
    assert params.logit_bias == {token_id: FORBIDDEN_TOKEN_BIAS for token_id in VISION.values()}
    assert params.detokenize  # stop strings need text
    free = to_sampling_params(SamplingConfig(forbid_vision_tokens=False, prompt_logprobs=True), VISION)
    assert not free.logit_bias and free.prompt_logprobs == 0 and not free.detokenize


def test_error_rollouts_keep_the_group_whole() -> None:
    rollouts = error_rollouts("p3", 4, "too long", version=2)
    assert [r.sample_index for r in rollouts] == [0, 1, 2, 3]
    assert all(not r.ok and r.finish_reason == "error" and r.token_ids == [] for r in rollouts)
