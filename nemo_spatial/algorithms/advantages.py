"""Outcome advantages from per-sample rewards, computed within groups of samples (one group per prompt).

Inputs are per-sample scalar rewards `(B,)` and per-sample group ids `(B,)`; the output is per-sample
advantages `(B,)`, which `broadcast_to_tokens` spreads over a response mask `(B, T)`.

Estimators (registry `ADVANTAGE_ESTIMATORS`), for sample i in group g with n_g samples:
- "grpo" (upstream SpatialThinker / EasyR1, DeepSeekMath):  A_i = (r_i - mean_g) / (std_g + eps),
  std unbiased (divides by n_g - 1), eps = 1e-6.
- "dr_grpo" (Liu et al. 2025, "Understanding R1-Zero-Like Training"):  A_i = r_i - mean_g  (no std division).
- "rloo" (Kool et al. 2019; Ahmadian et al. 2024):  A_i = r_i - mean_{j in g, j != i} r_j
  = n_g / (n_g - 1) * (r_i - mean_g). Nothing else scales it: no std division and no batch whitening, as in
  verl and EasyR1 (TRL's RLOO optionally whitens; we do not), because the leave-one-out baseline is already
  unbiased and a std division would reintroduce the per-prompt difficulty weighting Dr.GRPO removes.

Groups are defined by ids, never by content: the trainer passes the index of the prompt in the rollout batch
(`prompt_group_ids`), so two different images asked the same question text are different groups, and the
same prompt drawn twice in one batch is two groups. Ids may be an integer tensor or any hashable values
(ints, strings such as uuids, tuples).

Departures from upstream, all at degenerate inputs:
- A group of one sample gets advantage 0 for every estimator: it has no baseline to compare against.
  Upstream EasyR1 asserts n > 1; torch.std of one element is nan (nan advantages); verl uses mean 0 and
  std 1 there (advantage = the raw reward). A warning with the count is logged.
- A group whose rewards are all equal gets exactly 0 (upstream: 0 up to rounding, since
  (r - mean) / (0 + eps) amplifies the mean's rounding error by 1e6). Group statistics are computed in
  float64 for the same reason; the result has the rewards' floating dtype (float32 for integer rewards).
- Non-finite rewards raise ValueError naming the samples (upstream would spread nan through the group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from nemo_spatial.algorithms.registry import Registry

logger = logging.getLogger(__name__)

GroupIds = torch.Tensor | Sequence[Hashable]
AdvantageFn = Callable[[torch.Tensor, GroupIds], torch.Tensor]

ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator")
register_advantage = ADVANTAGE_ESTIMATORS.register
GRPO_EPS = 1e-6


@dataclass(frozen=True)
class Groups:
    """Samples mapped to groups: `index` (B,) long in [0, G), `sizes` (G,) long."""

    index: torch.Tensor
    sizes: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.sizes.numel())


def prompt_group_ids(num_prompts: int, samples_per_prompt: int) -> torch.Tensor:
    """Group ids (num_prompts * n,) for a rollout laid out prompt-major: [0]*n + [1]*n + ..."""
    return torch.arange(num_prompts).repeat_interleave(samples_per_prompt)


def make_groups(group_ids: GroupIds, device: torch.device | None = None) -> Groups:
    """Map arbitrary group ids (B,) to contiguous group numbers; rejects float ids (nan != nan)."""
    if isinstance(group_ids, torch.Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids must be 1-D (B,), got shape {tuple(group_ids.shape)}")
        if group_ids.is_floating_point() or group_ids.is_complex():
            raise ValueError(f"group_ids must be integer ids (e.g. the prompt's index), got dtype {group_ids.dtype}")
        _, index = torch.unique(group_ids, return_inverse=True)
        index = index.to(device or group_ids.device)
    else:
        numbers: dict[Hashable, int] = {}
        index = torch.tensor([numbers.setdefault(g, len(numbers)) for g in group_ids], dtype=torch.long, device=device)
    num_groups = int(index.max()) + 1 if index.numel() else 0
    sizes = torch.bincount(index, minlength=num_groups)
    return Groups(index=index, sizes=sizes)


def broadcast_to_tokens(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-sample advantages (B,) -> per-token (B, T): A_i on valid tokens of response i, 0 on padding."""
    if advantages.dim() != 1 or response_mask.dim() != 2 or advantages.shape[0] != response_mask.shape[0]:
        raise ValueError(
            f"need advantages (B,) and response_mask (B, T); got {tuple(advantages.shape)} "
            f"and {tuple(response_mask.shape)}"
        )
    tokens = advantages.unsqueeze(1).expand(response_mask.shape)
    return torch.where(response_mask.bool(), tokens, torch.zeros_like(tokens))


def compute_advantages(name: str, rewards: torch.Tensor, group_ids: GroupIds) -> torch.Tensor:
    """Advantages (B,) by the registered estimator `name` ("grpo", "dr_grpo", "rloo", ...)."""
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_ids)


@register_advantage("grpo")
@torch.no_grad()
def grpo_advantages(rewards: torch.Tensor, group_ids: GroupIds, eps: float = GRPO_EPS) -> torch.Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps), std unbiased (n_g - 1). rewards (B,), group_ids (B,) -> (B,)."""
    r, groups, dtype = _prepare(rewards, group_ids)
    deviation = r - _group_mean(r, groups)[groups.index]
    # Two-pass variance (sum of squared deviations), steadier than E[r^2] - E[r]^2.
    sizes = groups.sizes.to(r.dtype)
    variance = _group_sum(deviation.square(), groups) / (sizes - 1).clamp(min=1)
    std = variance.sqrt()[groups.index]
    return _finish(deviation / (std + eps), r, groups, dtype)


@register_advantage("dr_grpo")
@torch.no_grad()
def dr_grpo_advantages(rewards: torch.Tensor, group_ids: GroupIds) -> torch.Tensor:
    """A_i = r_i - mean_g. rewards (B,), group_ids (B,) -> (B,)."""
    r, groups, dtype = _prepare(rewards, group_ids)
    return _finish(r - _group_mean(r, groups)[groups.index], r, groups, dtype)


@register_advantage("rloo")
@torch.no_grad()
def rloo_advantages(rewards: torch.Tensor, group_ids: GroupIds) -> torch.Tensor:
    """A_i = r_i - (sum_g - r_i) / (n_g - 1), the leave-one-out baseline. rewards (B,), group_ids (B,) -> (B,)."""
    r, groups, dtype = _prepare(rewards, group_ids)
    others = (groups.sizes.to(r.dtype) - 1).clamp(min=1)[groups.index]
    baseline = (_group_sum(r, groups)[groups.index] - r) / others
    return _finish(r - baseline, r, groups, dtype)


@torch.no_grad()
def zero_variance_group_fraction(rewards: torch.Tensor, group_ids: GroupIds) -> float:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal); a training-health metric."""
    r, groups, _ = _prepare(rewards, group_ids)
    if groups.num_groups == 0:
        return 0.0
    constant = _group_constant(r, groups)
    return float(constant.float().mean())


def _prepare(rewards: torch.Tensor, group_ids: GroupIds) -> tuple[torch.Tensor, Groups, torch.dtype]:
    """Validated float64 rewards, their groups, and the dtype to return."""
    if not isinstance(rewards, torch.Tensor):
        rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be per-sample scalars (B,), got shape {tuple(rewards.shape)}")
    groups = make_groups(group_ids, device=rewards.device)
    if groups.index.numel() != rewards.numel():
        raise ValueError(f"{rewards.numel()} rewards but {groups.index.numel()} group ids; pass one id per sample")
    bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(f"#{i}={rewards[i].item()}" for i in bad[:5])
        raise ValueError(
            f"{len(bad)} non-finite reward(s) ({shown}); map scoring failures to a finite reward "
            "(the reward library scores them 0) before computing advantages"
        )
    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    return rewards.to(torch.float64), groups, dtype


def _group_sum(values: torch.Tensor, groups: Groups) -> torch.Tensor:
    return torch.zeros(groups.num_groups, dtype=values.dtype, device=values.device).index_add_(0, groups.index, values)


def _group_mean(values: torch.Tensor, groups: Groups) -> torch.Tensor:
    return _group_sum(values, groups) / groups.sizes.to(values.dtype)


def _group_constant(r: torch.Tensor, groups: Groups) -> torch.Tensor:
    """(G,) bool: every reward of the group is equal (includes groups of one)."""
    empty = torch.full((groups.num_groups,), torch.nan, dtype=r.dtype, device=r.device)
    high = empty.scatter_reduce(0, groups.index, r, reduce="amax", include_self=False)
    low = empty.scatter_reduce(0, groups.index, r, reduce="amin", include_self=False)
    return high == low


def _finish(advantages: torch.Tensor, r: torch.Tensor, groups: Groups, dtype: torch.dtype) -> torch.Tensor:
    """Exact 0 for constant groups and groups of one; cast to the rewards' floating dtype."""
    if groups.num_groups:
        constant = _group_constant(r, groups)[groups.index]
        advantages = torch.where(constant, torch.zeros_like(advantages), advantages)
        singletons = int((groups.sizes == 1).sum())
        if singletons:
            logger.warning(
                "%d of %d advantage groups have one sample; their advantage is 0", singletons, len(groups.sizes)
            )
    return advantages.to(dtype)
