"""From prompts and sampled responses to what the policy trains on.

A rollout batch holds P prompts x n samples, sample-major within a prompt (rows p*n .. p*n+n-1 are prompt p's
group, as the generator returns them). Each row of the `PolicyBatch` is the processor's prompt tokens (image
pads expanded) followed by the sampled response tokens, right-padded; the response mask marks the sampled
tokens (the stop token included, as upstream); each row carries its prompt's image (the n samples of a group
repeat it, because the policy batches images per row). vLLM's sampling log-probs go along as
`extras["rollout_log_probs"]`, aligned with the tokens, for the mismatch metric and truncated IS.

Groups whose prompt the generator could not run (rollouts with `error`) are dropped whole, so every group
the advantages see has all n samples; the count is reported.
Dropping can leave a number of samples that does not split over DP ranks x micro-batch size; the trainer then
also leaves out the last few complete groups (`trainable_group_count`) rather than stop a long run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nemo_spatial.generation.types import Rollout


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


def build_policy_batch(
    prompts: Sequence[Any], rollouts: Sequence[Rollout], n: int, advantages: torch.Tensor, pad_id: int
) -> Any:
    """The `PolicyBatch` of P prompts (data.PromptSample) x n rollouts, with per-sample advantages (P*n,)."""
    from nemo_spatial.models.qwen25_vl.batch import PolicyBatch

    rows = len(rollouts)
    if rows != len(prompts) * n or advantages.shape != (rows,):
        raise ValueError(f"{len(prompts)} prompts x {n} samples need {len(prompts) * n} rollouts and advantages")
    lengths = [int(prompts[i // n].input_ids.numel()) + len(r.token_ids) for i, r in enumerate(rollouts)]
    width = max(lengths)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.bool)
    response = torch.zeros((rows, width), dtype=torch.bool)
    rollout_logprobs = torch.zeros((rows, width), dtype=torch.float32)
    for i, rollout in enumerate(rollouts):
        prompt_ids = prompts[i // n].input_ids.long()
        start, end = prompt_ids.numel(), lengths[i]
        input_ids[i, :start] = prompt_ids
        input_ids[i, start:end] = torch.tensor(rollout.token_ids, dtype=torch.long)
        attention[i, :end] = True
        response[i, start:end] = True
        rollout_logprobs[i, start:end] = torch.tensor(rollout.logprobs, dtype=torch.float32)
    return PolicyBatch(
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=response,
        pixel_values=torch.cat([prompts[i // n].pixel_values for i in range(rows)]),
        image_grid_thw=torch.cat([prompts[i // n].image_grid_thw for i in range(rows)]).long(),
        advantages=advantages.float(),
        extras={"rollout_log_probs": rollout_logprobs},
    )
