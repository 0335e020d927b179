"""The generator interface the trainer sees: requests in, rollouts out, weights pushed in, health.

Two implementations: `ServerGenerator` (client of `python -m nemo_spatial.generation.serve`, in
`client.py`) and `InProcessGenerator` (a vLLM engine owned by this process, in `inprocess.py`). The
trainer never sees a vLLM type. Every rollout carries the weight version it was sampled with, and
`require_version` is how the trainer refuses rollouts from stale weights.

A prompt is text with the chat template already applied and one
`<|vision_start|><|image_pad|><|vision_end|>` per image (what the Qwen2.5-VL processor renders), plus the
PIL images; vLLM expands the placeholder to the image's patch count and computes the mRoPE positions
itself. A token-id prompt is accepted too (text-only, or with one unexpanded `<|image_pad|>` per image).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from nemo_spatial.generation.config import SamplingConfig

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# Counted to match images with placeholders (an already expanded run of pads still starts like this).
IMAGE_PLACEHOLDER_START = "<|vision_start|><|image_pad|>"
VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
FINISH_ERROR = "error"


class GenerationError(RuntimeError):
    """Base of the errors a generator raises."""


class GeneratorUnavailableError(GenerationError):
    """The generation server died or stopped answering; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- generation server log (tail) ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class GenerationRequestError(GenerationError):
    """The server refused a request as malformed (HTTP 4xx); the message says what to fix."""


class WeightSyncError(GenerationError):
    """A weight update failed; the server's weights are in an unknown state until the next full sync."""


class GeneratorRestartedError(GenerationError):
    """The engine was restarted from its checkpoint (`weight_version` is 0 again): push the weights, then retry."""


class StaleRolloutError(GenerationError):
    """Rollouts were sampled with weights older than the trainer's."""


@dataclass
class GenerationRequest:
    """One prompt: rendered text (or token ids) plus its images, under an id the rollouts carry back."""

    prompt_id: str
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    images: list[Image.Image] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.prompt_token_ids is None):
            raise ValueError(f"request {self.prompt_id!r}: give exactly one of prompt (text) or prompt_token_ids")
        if self.prompt is not None and not self.prompt:
            raise ValueError(f"request {self.prompt_id!r}: the prompt is empty")
        if self.prompt_token_ids is not None and not self.prompt_token_ids:
            raise ValueError(f"request {self.prompt_id!r}: prompt_token_ids is empty")


@dataclass
class Rollout:
    """One sample of one prompt.

    `log_probs[i]` is the log-probability of `token_ids[i]` under the distribution it was sampled from
    (after temperature / top-p when the engine runs with logprobs_mode=processed_logprobs, the default).
    `weight_version` is the oldest weight version any of its tokens was sampled with (vLLM tracks
    versions per token span, so a sample that straddled an update reports the older one).
    A prompt the server could not run comes back as n rollouts with `error` set and no tokens, so the
    group structure survives; the trainer drops such groups and counts them.
    """

    prompt_id: str
    sample_index: int
    token_ids: list[int]
    log_probs: list[float]
    weight_version: int
    finish_reason: str
    stop_reason: int | str | None = None
    prompt_token_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[float | None] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SyncStats:
    """What one weight update moved and how long it took."""

    version: int
    num_tensors: int
    num_bytes: int
    num_buckets: int
    seconds: float

    @property
    def gb_per_s(self) -> float:
        return self.num_bytes / 1e9 / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class GeneratorHealth:
    """The generator's state as the trainer needs it."""

    ok: bool
    weight_version: int | None
    detail: str = ""
    model: str = ""
    max_model_len: int = 0


@runtime_checkable
class Generator(Protocol):
    """What the trainer uses to get rollouts and keep the rollout engine on-policy."""

    @property
    def weight_version(self) -> int:
        """The version of the weights the engine serves (0: the checkpoint it started from, also after a
        restart); the trainer pushes its weights whenever this differs from its own version."""
        ...

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[Rollout]:
        """n samples per request, grouped by request in order (request 0's n samples first)."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        """Push full HF-named tensors, streamed in bounded buckets; afterwards rollouts carry `version`."""
        ...

    def health(self) -> GeneratorHealth: ...

    def prepare_for_generation(self) -> dict[str, float]:
        """Before the step's refit and generation: wake sleeping engines (placement=colocated); metrics."""
        ...

    def release_memory(self) -> dict[str, float]:
        """After generating: colocated engines sleep (the trainer's phase gets the memory); returns the phase's
        generator metrics (several servers: per-server busy time and the tail)."""
        ...

    def close(self) -> None: ...


def require_version(rollouts: list[Rollout], version: int) -> None:
    """Refuse rollouts sampled with weights other than `version` (the trainer's current weights)."""
    stale = [r for r in rollouts if r.ok and r.weight_version != version]
    if stale:
        versions = sorted({r.weight_version for r in stale})
        raise StaleRolloutError(
            f"{len(stale)} of {len(rollouts)} rollouts were sampled with weight version(s) {versions}, "
            f"but the trainer is at version {version}: the weight sync did not reach the generator "
            "(or the server restarted from its checkpoint). Push the weights again before generating."
        )
