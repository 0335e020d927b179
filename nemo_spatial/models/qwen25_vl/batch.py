"""Processed rollouts as the Megatron policy consumes them, and how they are cut into padded micro-batches.

A `PolicyBatch` holds one row per sample (prompt + response), RIGHT-padded to a common length S:
    input_ids        (B, S) int64   prompt + response token ids; padding anywhere after the last real token
    attention_mask   (B, S) bool    True on real tokens (prompt and response)
    response_mask    (B, S) bool    True on the response tokens whose log-probs are trained and returned
    pixel_values     (P, D) float   every image's patches, images in sample order (the Qwen2.5-VL processor's output)
    image_grid_thw   (N, 3) int64   (t, h, w) patch grid of each image, in sample order
    images_per_sample (B,) int64    images of each sample (default: one per sample when N == B, else required)
    advantages       (B, S) or (B,), old_logprobs / ref_logprobs (B, S): training inputs, optional
    extras           {name: (B, ...)} more per-sample tensors handed to the loss function (e.g. rollout_log_probs)

Token log-probs are aligned with the tokens: logprobs[b, t] = log p(input_ids[b, t] | input_ids[b, :t]); position 0
and padding hold 0. mRoPE position ids are not carried: the bridge's Qwen25VLModel derives them from input_ids and
image_grid_thw on every pipeline stage (the processor's `get_rope_index`), so they cannot disagree with the tokens.

Padding, not packing (the throughput choice): samples are sorted by length and cut into micro-batches of
similar length, each padded only to its own longest sample, rounded up to the multiple that sequence / context
parallelism need. Right padding is exact under causal attention (a real token never attends to a later pad).
Packing several sequences into one row (THD) would save the remaining padding, but Megatron's packed attention
needs Transformer Engine's kernels, so the CPU path could not test it; it is the next step on GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch

TRAINING_FIELDS = ("advantages", "old_logprobs", "ref_logprobs")


@dataclass
class PolicyBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    images_per_sample: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, S); got shape {tuple(self.input_ids.shape)}")
        shape = tuple(self.input_ids.shape)
        for name in ("attention_mask", "response_mask", "old_logprobs", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have the shape of input_ids {shape}; got {tuple(value.shape)}")
        self.attention_mask = self.attention_mask.bool()
        self.response_mask = self.response_mask.bool()
        if bool((self.response_mask & ~self.attention_mask).any()):
            raise ValueError("response_mask marks padding tokens (attention_mask is False there)")
        if bool(self.response_mask[:, 0].any()):
            raise ValueError("response_mask marks position 0, which has no preceding token to predict it from")
        if self.advantages is not None and self.advantages.shape[0] != shape[0]:
            raise ValueError(f"advantages must be (B,) or (B, S) with B={shape[0]}")
        for name, value in self.extras.items():
            if value.shape[0] != shape[0]:
                raise ValueError(f"extras[{name!r}] must have B={shape[0]} rows; got {tuple(value.shape)}")
        self._check_images()

    def _check_images(self) -> None:
        if self.pixel_values is None:
            if self.image_grid_thw is not None:
                raise ValueError("image_grid_thw is given without pixel_values")
            return
        if self.image_grid_thw is None:
            raise ValueError("pixel_values is given without image_grid_thw")
        num_images, batch = self.image_grid_thw.shape[0], self.batch_size
        if self.images_per_sample is None:
            if num_images != batch:
                raise ValueError(
                    f"{num_images} images for {batch} samples: pass images_per_sample (B,) to say which is whose"
                )
            self.images_per_sample = torch.ones(batch, dtype=torch.long)
        if int(self.images_per_sample.sum()) != num_images:
            raise ValueError(f"images_per_sample sums to {int(self.images_per_sample.sum())}, not {num_images}")
        patches = int(self.image_grid_thw.prod(dim=-1).sum())
        if patches != self.pixel_values.shape[0]:
            raise ValueError(
                f"image_grid_thw describes {patches} patches; pixel_values has {self.pixel_values.shape[0]}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens of each sample up to and including its last real token, (B,)."""
        positions = torch.arange(self.input_ids.shape[1]).expand_as(self.attention_mask)
        return torch.where(self.attention_mask, positions + 1, 0).amax(dim=1)

    def select(self, rows: list[int] | torch.Tensor, length: int | None = None) -> PolicyBatch:
        """The samples `rows` (in that order), cut or right-padded to `length` columns, with their images."""
        index = torch.as_tensor(rows, dtype=torch.long)
        length = length if length is not None else int(self.input_ids.shape[1])
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("input_ids", "attention_mask", "response_mask", "old_logprobs", "ref_logprobs"):
            value = out[name]
            if value is not None:
                out[name] = _fit_columns(value[index], length)
        if self.advantages is not None:
            advantages = self.advantages[index]
            out["advantages"] = _fit_columns(advantages, length) if advantages.dim() == 2 else advantages
        # Extras with one column per token (B, S), like vLLM's rollout log-probs, follow the token columns.
        columns = int(self.input_ids.shape[1])
        out["extras"] = {
            name: _fit_columns(value[index], length) if value.dim() >= 2 and value.shape[1] == columns else value[index]
            for name, value in self.extras.items()
        }
        if self.pixel_values is not None:
            out["pixel_values"], out["image_grid_thw"], out["images_per_sample"] = self._images_of(index)
            if out["image_grid_thw"].shape[0] == 0:  # none of these samples has an image
                out["pixel_values"] = out["image_grid_thw"] = out["images_per_sample"] = None
        return replace(self, **out)

    def _images_of(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.image_grid_thw is not None and self.images_per_sample is not None and self.pixel_values is not None
        image_start = torch.cumsum(self.images_per_sample, 0) - self.images_per_sample
        patches = self.image_grid_thw.prod(dim=-1)
        patch_start = torch.cumsum(patches, 0) - patches
        image_ids = [
            i
            for row in index.tolist()
            for i in range(int(image_start[row]), int(image_start[row] + self.images_per_sample[row]))
        ]
        pieces = [self.pixel_values[int(patch_start[i]) : int(patch_start[i] + patches[i])] for i in image_ids]
        pixel_values = torch.cat(pieces) if pieces else self.pixel_values[:0]
        return pixel_values, self.image_grid_thw[image_ids], self.images_per_sample[index]

    def to(self, device: torch.device | str) -> PolicyBatch:
        """The same batch with every tensor on `device` (no copy where it already is)."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
        moved["extras"] = {name: value.to(device, non_blocking=True) for name, value in self.extras.items()}
        return replace(self, **moved)

    def shard(self, rank: int, world: int) -> PolicyBatch:
        """This data-parallel rank's contiguous share of the samples (B must divide by `world`)."""
        if self.batch_size % world != 0:
            raise ValueError(f"a batch of {self.batch_size} samples does not split over {world} data-parallel ranks")
        per_rank = self.batch_size // world
        return self.select(list(range(rank * per_rank, (rank + 1) * per_rank)))


@dataclass
class MicroBatch:
    """A padded micro-batch and where its rows came from in the caller's batch."""

    batch: PolicyBatch
    rows: torch.Tensor  # (b,) row indices into the original batch


def make_micro_batches(batch: PolicyBatch, micro_batch_size: int, multiple: int = 1) -> list[MicroBatch]:
    """Length-sorted micro-batches of `micro_batch_size` samples, each padded to its longest (rounded up)."""
    lengths = batch.lengths
    order = sorted(range(batch.batch_size), key=lambda row: (int(lengths[row]), row))
    micro_batches = []
    for start in range(0, len(order), micro_batch_size):
        rows = torch.tensor(order[start : start + micro_batch_size], dtype=torch.long)
        length = max(2, int(lengths[rows].max()))
        length = math.ceil(length / multiple) * multiple
        micro_batches.append(MicroBatch(batch=batch.select(rows, length), rows=rows))
    return micro_batches


def scatter_rows(pieces: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int, length: int) -> torch.Tensor:
    """Reassemble per-micro-batch (rows, values (b, s)) into one (B, length) tensor, zero-padded."""
    out = torch.zeros(batch_size, length, dtype=pieces[0][1].dtype if pieces else torch.float32)
    for rows, values in pieces:
        width = min(length, values.shape[1])
        out[rows, :width] = values[:, :width].to(out.dtype)
    return out


def _fit_columns(tensor: torch.Tensor, length: int) -> torch.Tensor:
    if tensor.shape[1] >= length:
        return tensor[:, :length]
    pad = torch.zeros(tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:], dtype=tensor.dtype)
    return torch.cat([tensor, pad], dim=1)
