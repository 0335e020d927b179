"""The interfaces the GRPO loop is written against (trainer.py sees nothing else).

    Policy          the trainable model (models.qwen25_vl.MegatronPolicy): log-probs, one optimizer step,
                    the HF-named weight export (collective), checkpoints, this rank's share of the rows, and
                    the offload of its optimizer state and grads during a colocated generation phase
    Generator       rollouts and weight pushes (generation.types.Generator; ServerGenerator, InProcessGenerator)
    RewardClient    scores (reward.client.RewardClient; LocalRewardClient, RemoteRewardClient)
    PromptSource    the resumable prompt stream (data.PromptStream), yielding `Prompt`s
    Collectives     driver work, shared decisions (parallel.collectives)
The batch the loop builds is `nemo_spatial.batch.PolicyBatch`; the loss function's contract is in
models/qwen25_vl/policy.py's docstring (`LossFn`). Fakes of these drive the loop's unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from nemo_spatial.generation.types import Generator
from nemo_spatial.parallel.collectives import Collectives
from nemo_spatial.reward.client import RewardClient

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from nemo_spatial.algorithms.aggregation import LossScale
    from nemo_spatial.batch import PolicyBatch

__all__ = ["Collectives", "Generator", "Policy", "Prompt", "PromptSource", "RewardClient"]


# A prompt stream's position as it saves it in a checkpoint: JSON-serializable, its schema the stream's own
# (the loop only stores it and hands it back).
StreamState = dict[str, Any]


class LossFn(Protocol):
    def __call__(
        self, log_probs: torch.Tensor, batch: PolicyBatch, scale: LossScale
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class Policy(Protocol):
    """What the loop needs of the policy; every method is called on every rank (SPMD)."""

    @property
    def sample_multiple(self) -> int:
        """Every optimizer step's sample count must be a multiple of this (DP ranks x micro-batch size)."""
        ...

    @property
    def data_shard(self) -> tuple[int, int]:
        """(data-parallel rank, DP size): this rank trains on the rank-th contiguous share of each update's rows."""
        ...

    def compute_log_probs(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, entropy) of the batch's tokens, each (B, S)."""
        ...

    def reference_log_probs(self, batch: PolicyBatch) -> torch.Tensor: ...

    def train_step(self, batch: PolicyBatch, loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step over this rank's rows; metrics of the global batch (the same on every rank)."""
        ...

    def named_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full HF-named tensors; collective: every rank walks it to the end."""
        ...

    def offload_to_host(self) -> dict[str, float]:
        """Before colocated engines wake: free the grads and move the optimizer state to host memory (the
        weights stay: the refit reads them); timing/offload_s and the bytes. A no-op when already offloaded."""
        ...

    def reload_to_device(self) -> dict[str, float]:
        """After the engines sleep, before the next forward: undo `offload_to_host`; timing/reload_s."""
        ...

    def save_checkpoint(self, path: str) -> None: ...

    def load_checkpoint(self, path: str) -> dict[str, Any]: ...

    def export_hf(self, checkpoint: str) -> str:
        """Write a Hugging Face model of the current weights beside the run (`<run>/hf/step_N`); returns its path."""
        ...


class Prompt(Protocol):
    """A model-ready prompt (data.PromptSample): what generation, the policy batch and the reward read."""

    raw_prompt_ids: list[int]  # tokens with one unexpanded image pad per image (the generator's prompt)
    input_ids: torch.Tensor  # (L,) image pads expanded (the policy's prompt tokens)
    pixel_values: torch.Tensor | None  # (patches, D): the image processor's output; None until a rank prepares it
    image_grid_thw: torch.Tensor  # (1, 3)
    image: Image.Image  # the resized image (the generator's)
    ground_truth: str
    problem: str


class PromptSource(Protocol):
    def next_batch(self, size: int) -> Sequence[Prompt]:
        """The next `size` usable prompts (`Prompt`s), advancing the resumable position."""
        ...

    def one_pass(self) -> Iterator[Prompt]:
        """Every usable prompt once (validation), the position untouched."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters of the stream (skipped / truncated rows, epoch), logged with each step."""
        ...

    def state_dict(self) -> StreamState: ...

    def load_state_dict(self, state: StreamState) -> None: ...
