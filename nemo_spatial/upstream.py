"""Upstream-exact switches: where the project departs from SpatialThinker's code on purpose, the way back.

`upstream_exact: true` (top level of a config; the paper recipes carry it) sets every switch below at once;
each can also be set alone. What each restores (README, "Reproducing upstream number for number"):
- `algorithm.loss_aggregation: upstream-microbatch-mean` with `algorithm.upstream_microbatch_size: 4`:
  upstream's token mean within each micro-batch of 4 sequences per GPU, averaged over the micro-batches (the
  project's default token-mean weighs every token of the mini-batch alike; upstream weighs a token of a
  micro-batch of short responses more). The groups are the mini-batch's sequences in order, as upstream's
  contiguous per-GPU shares and micro-batches would be, whatever this run's micro-batching and layout.
- `reward.upstream_exact: true`: a matched box pair's mcIoU is no longer floored at 0 (upstream lets an
  inverted or degenerate predicted box score below 0). Set here when the reward config has that key.
Not switched (kept, documented in algorithms/): the [-20, 20] clamps before exp in the policy ratio and k3,
which change no finite upstream value and only remove upstream's overflow to inf/nan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

UPSTREAM_AGGREGATION = "upstream-microbatch-mean"
# (section, key, value) of every switch that `upstream_exact: true` sets.
UPSTREAM_SWITCHES: tuple[tuple[str, str, Any], ...] = (
    ("algorithm", "loss_aggregation", UPSTREAM_AGGREGATION),
    ("reward", "upstream_exact", True),
)


def apply_upstream_exact(cfg: Any) -> list[str]:
    """Set every upstream switch on `cfg` when `cfg.upstream_exact`; the keys set (a switch whose section has
    no such key yet is skipped, so this works before and after the reward's switch exists)."""
    if not getattr(cfg, "upstream_exact", False):
        return []
    applied = []
    for section, key, value in UPSTREAM_SWITCHES:
        part = getattr(cfg, section)
        if hasattr(part, key):
            setattr(part, key, value)
            applied.append(f"{section}.{key}")
    return applied


def upstream_loss_weights(response_lengths: Sequence[int], minibatches: Sequence[Sequence[int]], cfg: Any) -> Any:
    """Each rollout row's upstream-microbatch-mean weight (a (rows,) float tensor), or None when that mode is off.

    Computed on every rank from the response lengths of the WHOLE step (every rank has them), per optimizer
    step over that step's rows in rollout order, before the rows are split over data-parallel ranks and cut
    into this run's own length-sorted micro-batches: the weights travel with their rows (`PolicyBatch.loss_weights`),
    so they do not depend on the layout.
    """
    if cfg.algorithm.loss_aggregation != UPSTREAM_AGGREGATION:
        return None
    import torch

    from nemo_spatial.algorithms.aggregation import upstream_microbatch_weights

    weights = torch.zeros(len(response_lengths), dtype=torch.float32)
    for rows in minibatches:
        tokens = torch.tensor([response_lengths[i] for i in rows], dtype=torch.long)
        mask = torch.arange(int(tokens.max()) if len(rows) else 0) < tokens[:, None]  # (rows, T) response mask
        weights[list(rows)] = upstream_microbatch_weights(mask, cfg.algorithm.upstream_microbatch_size).float()
    return weights
