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

from typing import Any

UPSTREAM_AGGREGATION = "upstream-microbatch-mean"
UPSTREAM_WEIGHTS_KEY = "upstream_loss_weights"  # the batch extra the GRPO loss reads (trainer.py)
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


def with_upstream_weights(batch: Any, cfg: Any) -> Any:
    """The mini-batch with each row's upstream-microbatch-mean weight in its extras (when that mode is on).

    Computed here, on the whole mini-batch in rollout order, before the policy cuts it into its own
    length-sorted micro-batches and DP shares: the weights travel with their rows (batch.select).
    """
    if cfg.algorithm.loss_aggregation != UPSTREAM_AGGREGATION:
        return batch
    from nemo_spatial.algorithms.aggregation import upstream_microbatch_weights

    weights = upstream_microbatch_weights(batch.response_mask, cfg.algorithm.upstream_microbatch_size)
    batch.extras[UPSTREAM_WEIGHTS_KEY] = weights.float()
    return batch
