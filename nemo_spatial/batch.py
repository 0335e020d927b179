"""The training batch the loop builds and any policy consumes, and how it is cut into padded micro-batches.

Neutral (no model package): the loop builds it (rollouts.py), a policy (models/) trains on it. A
`PolicyBatch` holds one row per sample (prompt + response) of ONE data-parallel rank, RIGHT-padded to its
longest row S:
    input_ids        (B, S) int64   prompt + response token ids; padding anywhere after the last real token
    attention_mask   (B, S) bool    True on real tokens (prompt and response)
    response_mask    (B, S) bool    True on the response tokens whose log-probs are trained and returned
    pixel_values     (P, D) float   the patches of each DISTINCT image, in image order (the processor's output)
    image_grid_thw   (N, 3) int64   (t, h, w) patch grid of each distinct image
    images_per_sample (B,) int64    images of each sample (default: one per sample when N == B, else required)
    image_index      (M,) int64     for each sample's images in sample order (M = images_per_sample.sum()), which
                                    distinct image it is (default: 0..N-1, one copy per sample). The n samples of a
                                    GRPO group share their prompt's image: it is held once, not n times.
    advantages       (B, S) or (B,), old_log_probs / ref_log_probs / rollout_log_probs (B, S): training inputs,
                     optional; rollout_log_probs are the sampler's (vLLM's) log-probs of the sampled tokens.
    loss_weights     (B,) float     per-sample loss weights (upstream-microbatch-mean; nemo_spatial.upstream), optional

Micro-batches (`make_micro_batches`) carry their samples' images expanded in sample order (`image_index`
identity), as the model's forward takes them: a copy of at most micro_batch_size images at a time.

Token log-probs are aligned with the tokens: log_probs[b, t] = log p(input_ids[b, t] | input_ids[b, :t]); position 0
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
from dataclasses import dataclass, fields, replace

import torch

TOKEN_FIELDS = ("input_ids", "attention_mask", "response_mask", "old_log_probs", "ref_log_probs", "rollout_log_probs")


@dataclass
class PolicyBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    images_per_sample: torch.Tensor | None = None
    image_index: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    old_log_probs: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None
    rollout_log_probs: torch.Tensor | None = None
    loss_weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, S); got shape {tuple(self.input_ids.shape)}")
        shape = tuple(self.input_ids.shape)
        for name in TOKEN_FIELDS[1:]:
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have the shape of input_ids {shape}; got {tuple(value.shape)}")
        self.attention_mask = self.attention_mask.bool()
        self.response_mask = self.response_mask.bool()
        if bool((self.response_mask & ~self.attention_mask).any()):
            raise ValueError("response_mask marks padding tokens (attention_mask is False there)")
        if bool(self.response_mask[:, 0].any()):
            raise ValueError("response_mask marks position 0, which has no preceding token to predict it from")
        if self.loss_weights is not None and tuple(self.loss_weights.shape) != shape[:1]:
            raise ValueError(f"loss_weights must be (B,) with B={shape[0]}; got {tuple(self.loss_weights.shape)}")
        if self.advantages is not None and self.advantages.shape[0] != shape[0]:
            raise ValueError(f"advantages must be (B,) or (B, S) with B={shape[0]}")
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
            expected = batch if self.image_index is None else self.image_index.shape[0]
            if expected != batch:
                raise ValueError(
                    f"{expected} sample images for {batch} samples: pass images_per_sample (B,) to say which is whose"
                )
            if self.image_index is None and num_images != batch:
                raise ValueError(
                    f"{num_images} images for {batch} samples: pass images_per_sample (B,) or image_index (M,)"
                )
            self.images_per_sample = torch.ones(batch, dtype=torch.long)
        if self.image_index is None:
            self.image_index = torch.arange(num_images, dtype=torch.long)
        self.image_index = self.image_index.long()
        if int(self.images_per_sample.sum()) != self.image_index.shape[0]:
            raise ValueError(
                f"images_per_sample sums to {int(self.images_per_sample.sum())}, but image_index names "
                f"{self.image_index.shape[0]} sample images"
            )
        index = self.image_index
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < num_images:
            raise ValueError(f"image_index must name images 0..{num_images - 1}; got {self.image_index.tolist()}")
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
        """The samples `rows` (in that order), cut or right-padded to `length` columns, with the distinct images
        they use (each once)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        length = length if length is not None else int(self.input_ids.shape[1])
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in TOKEN_FIELDS:
            value = out[name]
            if value is not None:
                out[name] = _fit_columns(value[index], length)
        if self.advantages is not None:
            advantages = self.advantages[index]
            out["advantages"] = _fit_columns(advantages, length) if advantages.dim() == 2 else advantages
        if self.loss_weights is not None:
            out["loss_weights"] = self.loss_weights[index]
        if self.pixel_values is not None:
            out.update(self._images_of(index, expand=False))
        return replace(self, **out)

    def with_expanded_images(self) -> PolicyBatch:
        """The same samples with one copy of each sample's images, in sample order (what the model's forward takes)."""
        if self.pixel_values is None:
            return self
        images = self._images_of(torch.arange(self.batch_size), expand=True)
        return replace(self, **images)  # type: ignore[arg-type]  # every image field is a Tensor or None

    def _images_of(self, index: torch.Tensor, expand: bool) -> dict[str, torch.Tensor | None]:
        assert self.image_grid_thw is not None and self.images_per_sample is not None and self.pixel_values is not None
        assert self.image_index is not None
        first = torch.cumsum(self.images_per_sample, 0) - self.images_per_sample
        used = [
            int(self.image_index[i])
            for row in index.tolist()
            for i in range(int(first[row]), int(first[row] + self.images_per_sample[row]))
        ]
        if not used:  # none of these samples has an image
            return {"pixel_values": None, "image_grid_thw": None, "images_per_sample": None, "image_index": None}
        distinct = used if expand else list(dict.fromkeys(used))
        position = {image: i for i, image in enumerate(dict.fromkeys(distinct))}
        patches = self.image_grid_thw.prod(dim=-1)
        patch_start = torch.cumsum(patches, 0) - patches
        pieces = [self.pixel_values[int(patch_start[i]) : int(patch_start[i] + patches[i])] for i in distinct]
        new_index = torch.arange(len(used)) if expand else torch.tensor([position[i] for i in used])
        return {
            "pixel_values": torch.cat(pieces),
            "image_grid_thw": self.image_grid_thw[distinct],
            "images_per_sample": self.images_per_sample[index],
            "image_index": new_index.long(),
        }

    def to(self, device: torch.device | str) -> PolicyBatch:
        """The same batch with every tensor on `device` (no copy where it already is)."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
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
        micro_batches.append(MicroBatch(batch=batch.select(rows, length).with_expanded_images(), rows=rows))
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
