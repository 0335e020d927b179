"""From prompts and sampled responses to what the policy trains on.

A rollout batch holds P prompts x n samples, sample-major within a prompt (rows p*n .. p*n+n-1 are prompt p's
group, as the generator returns them). Optimizer steps take `prompts_per_update` groups at a time, in order
(`minibatch_rows`), and each is split over the DP ranks in contiguous shares (`rank_rows`): a rank builds a
`PolicyBatch` of ITS rows only (`build_policy_batch`), never the global batch. Each row is the processor's
prompt tokens (image pads expanded) followed by the sampled response tokens, right-padded to the rank's longest
row (micro-batches re-pad to their own); the response mask marks the sampled tokens (the stop token included, as
upstream). Each prompt's image is held once (`image_index` points a group's n samples at it). vLLM's sampling
log-probs are the batch's `rollout_log_probs`, aligned with the tokens, for the mismatch metric and truncated IS.

Groups whose prompt the generator could not run (rollouts with `error`) are dropped whole, so every group
the advantages see has all n samples; the count is reported.
Dropping can leave a number of samples that does not split over DP ranks x micro-batch size; the trainer then
also leaves out the last few complete groups (`trainable_group_count`) rather than stop a long run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nemo_spatial.batch import PolicyBatch
from nemo_spatial.generation.types import Rollout

if TYPE_CHECKING:
    from nemo_spatial.contracts import Prompt


@dataclass
class RolloutGroupFilter:
    """Which prompts survive (every sample generated) and how many were dropped."""

    kept: list[int]
    dropped: int
    errors: list[str]


def keep_complete_groups(rollouts: Sequence[Rollout], num_prompts: int, n: int) -> RolloutGroupFilter:
    if len(rollouts) != num_prompts * n:
        raise ValueError(f"expected {num_prompts} x {n} rollouts, got {len(rollouts)}")
    kept, errors = [], []
    for p in range(num_prompts):
        group = rollouts[p * n : (p + 1) * n]
        failed = [r.error for r in group if not r.ok]
        if failed:
            errors.append(str(failed[0]))
        else:
            kept.append(p)
    return RolloutGroupFilter(kept=kept, dropped=num_prompts - len(kept), errors=errors)


def trainable_group_count(complete: int, n: int, sample_multiple: int) -> int:
    """The most of `complete` groups of n samples whose samples are a multiple of `sample_multiple`."""
    groups_per_unit = sample_multiple // math.gcd(n, sample_multiple)
    return complete - complete % groups_per_unit


def minibatch_rows(num_prompts: int, n: int, prompts_per_update: int) -> list[list[int]]:
    """Rows of each optimizer step: whole groups of n, `prompts_per_update` groups at a time, in order."""
    return [
        list(range(first * n, min(first + prompts_per_update, num_prompts) * n))
        for first in range(0, num_prompts, prompts_per_update)
    ]


def rank_rows(minibatches: Sequence[Sequence[int]], rank: int, size: int) -> list[list[int]]:
    """This DP rank's rows of each optimizer step: the `rank`-th contiguous share (each step's rows split evenly)."""
    shares = []
    for rows in minibatches:
        if len(rows) % size:
            raise ValueError(f"an optimizer step of {len(rows)} samples does not split over {size} data-parallel ranks")
        per_rank = len(rows) // size
        shares.append(list(rows[rank * per_rank : (rank + 1) * per_rank]))
    return shares


def build_policy_batch(
    prompts: Mapping[int, Prompt] | Sequence[Prompt],
    rollouts: Sequence[Rollout],
    n: int,
    advantages: torch.Tensor,
    pad_id: int,
    rows: Sequence[int] | None = None,
) -> PolicyBatch:
    """The `PolicyBatch` of the global rows `rows` (default: all) of P prompts x n rollouts, with per-sample
    advantages (P*n,); `prompts` holds (at least) the prompts of those rows, by prompt index, and each prompt
    contributes its image once."""
    total = len(rollouts)
    if total % n or advantages.shape != (total,):
        raise ValueError(f"{total} rollouts and {tuple(advantages.shape)} advantages are not P prompts x n={n}")
    rows = list(range(total)) if rows is None else list(rows)
    missing = sorted({i // n for i in rows} - set(range(len(prompts)) if isinstance(prompts, Sequence) else prompts))
    if missing:
        raise ValueError(f"the rows need prompts {missing}, which were not given")
    lengths = [int(prompts[i // n].input_ids.numel()) + len(rollouts[i].token_ids) for i in rows]
    width = max(lengths, default=2)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.bool)
    response = torch.zeros((len(rows), width), dtype=torch.bool)
    rollout_log_probs = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, i in enumerate(rows):
        prompt_ids = prompts[i // n].input_ids.long()
        start, end = prompt_ids.numel(), lengths[b]
        input_ids[b, :start] = prompt_ids
        input_ids[b, start:end] = torch.tensor(rollouts[i].token_ids, dtype=torch.long)
        attention[b, :end] = True
        response[b, start:end] = True
        rollout_log_probs[b, start:end] = torch.tensor(rollouts[i].log_probs, dtype=torch.float32)
    used = list(dict.fromkeys(i // n for i in rows))  # the prompts of these rows, each once
    pixels = [prompts[p].pixel_values for p in used]
    unprepared = [p for p, values in zip(used, pixels, strict=True) if values is None]
    if unprepared:
        raise ValueError(f"prompts {unprepared[:5]} have no pixel_values: prepare them first (data.PixelPreparer)")
    position = {p: k for k, p in enumerate(used)}
    return PolicyBatch(
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=response,
        pixel_values=torch.cat([values for values in pixels if values is not None]),
        image_grid_thw=torch.cat([prompts[p].image_grid_thw for p in used]).long(),
        image_index=torch.tensor([position[i // n] for i in rows], dtype=torch.long),
        advantages=advantages[rows].float(),
        rollout_log_probs=rollout_log_probs,
    )
