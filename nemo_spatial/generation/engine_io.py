"""Between this project's types and vLLM's: prompts, sampling parameters, outputs -> rollouts.

Shared by the server's route and the in-process engine, so both give identical rollouts for identical
requests. Imports vLLM lazily (only the functions that build vLLM objects need it).

Choices:
- Multimodal prompts go to vLLM as `{"prompt": text, "multi_modal_data": {"image": [PIL, ...]}}`; vLLM's
  Qwen2.5-VL processor expands each placeholder and computes the mRoPE positions.
- Prompts are checked before they reach the engine (one placeholder per image, no video), because a
  mismatch fails deep inside the model and would take the whole batch down.
- The vision special tokens get a logit bias of -100 (vLLM's clamp, probability ~e^-100), so a random
  policy cannot sample `<|image_pad|>`, which would break the trainer's forward pass.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import TYPE_CHECKING, Any

from nemo_spatial.generation.config import SamplingConfig
from nemo_spatial.generation.types import (
    FINISH_ERROR,
    IMAGE_PLACEHOLDER,
    IMAGE_PLACEHOLDER_START,
    VISION_SPECIAL_TOKENS,
    GenerationRequest,
    Rollout,
)

if TYPE_CHECKING:
    from vllm import RequestOutput, SamplingParams

FORBIDDEN_TOKEN_BIAS = -100.0
UNKNOWN_VERSION = -1


def vision_token_ids(tokenizer: Any) -> dict[str, int]:
    """Token ids of the vision special tokens this tokenizer has (read, never hard-coded)."""
    vocab = tokenizer.get_vocab()
    return {token: vocab[token] for token in VISION_SPECIAL_TOKENS if token in vocab}


def check_request(request: GenerationRequest, vision_ids: dict[str, int]) -> str | None:
    """Why this request cannot run (text for the error rollouts), or None."""
    n_images = len(request.images)
    if request.prompt is not None:
        if "<|video_pad|>" in request.prompt:
            return f"request {request.prompt_id!r}: video prompts are not supported (found <|video_pad|>)"
        n_placeholders = request.prompt.count(IMAGE_PLACEHOLDER_START)
    else:
        ids = request.prompt_token_ids or []
        start, pad = vision_ids.get("<|vision_start|>"), vision_ids.get("<|image_pad|>")
        n_placeholders = sum(1 for a, b in itertools.pairwise(ids) if a == start and b == pad)
        if vision_ids.get("<|video_pad|>") in ids:
            return f"request {request.prompt_id!r}: video prompts are not supported (found <|video_pad|>)"
    if n_placeholders != n_images:
        return (
            f"request {request.prompt_id!r} has {n_images} image(s) but {n_placeholders} image placeholder(s); "
            f"render the prompt with the processor's chat template (one {IMAGE_PLACEHOLDER} per image) "
            "and send every image it refers to"
        )
    return None


def to_engine_prompt(request: GenerationRequest) -> dict[str, Any]:
    prompt: dict[str, Any]
    if request.prompt is not None:
        prompt = {"prompt": request.prompt}
    else:
        prompt = {"prompt_token_ids": list(request.prompt_token_ids or [])}
    if request.images:
        prompt["multi_modal_data"] = {"image": list(request.images)}
    return prompt


def request_seed(seed: int | None, prompt_id: str, index: int) -> int | None:
    """A per-prompt seed from the batch seed: prompts must not share one (vLLM gives sample k of a prompt
    seed + k, so equal seeds would give every prompt the same random draws). Depends on the prompt's id and
    position only, so a prompt's samples do not change with the rest of the batch."""
    if seed is None:
        return None
    digest = hashlib.blake2b(f"{seed}:{prompt_id}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # room for + k without overflowing int64


def to_sampling_params(params: SamplingConfig, vision_ids: dict[str, int], seed: int | None = None) -> SamplingParams:
    """vLLM's SamplingParams; `seed` is this prompt's (see `request_seed`), not the batch's."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    bias = {token_id: FORBIDDEN_TOKEN_BIAS for token_id in vision_ids.values()} if params.forbid_vision_tokens else None
    return SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
        seed=seed,
        stop=list(params.stop) or None,
        stop_token_ids=list(params.stop_token_ids) or None,
        logprobs=0,
        prompt_logprobs=0 if params.prompt_logprobs else None,
        logit_bias=bias,
        detokenize=bool(params.stop),
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def parse_version(version: str | int | None) -> int:
    try:
        return int(version) if version is not None else UNKNOWN_VERSION
    except ValueError:
        return UNKNOWN_VERSION


def rollouts_from_output(prompt_id: str, output: RequestOutput, current_version: int) -> list[Rollout]:
    """One rollout per completion, in sample order, with sampled-token log-probs and weight versions."""
    prompt_ids = list(output.prompt_token_ids or [])
    prompt_logprobs = _prompt_logprobs(output, prompt_ids)
    rollouts = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        token_ids = list(completion.token_ids)
        log_probs: list[float] = []
        for position, token_id in enumerate(token_ids):
            entry = completion.logprobs[position] if completion.logprobs is not None else None
            log_probs.append(float(entry[token_id].logprob) if entry is not None else float("nan"))
        spans = completion.weight_versions or []
        version = min((parse_version(span.version) for span in spans), default=current_version)
        rollouts.append(
            Rollout(
                prompt_id=prompt_id,
                sample_index=completion.index,
                token_ids=token_ids,
                log_probs=log_probs,
                weight_version=version,
                finish_reason=str(completion.finish_reason),
                stop_reason=completion.stop_reason,
                prompt_token_ids=prompt_ids,
                prompt_logprobs=prompt_logprobs,
            )
        )
    return rollouts


def _prompt_logprobs(output: RequestOutput, prompt_ids: list[int]) -> list[float | None] | None:
    if output.prompt_logprobs is None:
        return None
    values: list[float | None] = []
    for position, entry in enumerate(output.prompt_logprobs):
        values.append(None if entry is None else float(entry[prompt_ids[position]].logprob))
    return values


def error_rollouts(prompt_id: str, n: int, message: str, version: int) -> list[Rollout]:
    """n empty rollouts carrying `message`, so the prompt's group stays whole and is dropped as one."""
    return [Rollout(prompt_id, index, [], [], version, FINISH_ERROR, error=message) for index in range(n)]
