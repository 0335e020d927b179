"""Independent reference implementations, deliberately different from nemo_spatial.algorithms.

Neither verl nor TRL can serve as a test dependency here: verl 0.9.1 would replace transformers, tokenizers,
omegaconf and packaging; TRL 1.16.0 installs cleanly but keeps its GRPO math inside GRPOTrainer methods (no
pure functions) and its import pulls in vLLM (~45 s). So these references are written from the papers and
upstream's formulas in another style: plain Python floats, one token or one sample at a time, dicts of lists for
groups, `statistics` for mean/stdev, `math` for exp/log, and TRL's "two-sided clipping" form of the dual clip,
    L = -min(min(r, delta) * A, clip(r, 1 - eps_low, 1 + eps_high) * A),
which equals the EasyR1 form min(max(-A r, -A clip(r)), -c A) [A < 0] whenever delta = c >= 1 + eps_high.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Hashable, Sequence


def reference_advantages(
    name: str, rewards: Sequence[float], ids: Sequence[Hashable], eps: float = 1e-6
) -> list[float]:
    by_group: dict[Hashable, list[float]] = defaultdict(list)
    for reward, group in zip(rewards, ids, strict=True):
        by_group[group].append(reward)
    out = []
    for reward, group in zip(rewards, ids, strict=True):
        members = by_group[group]
        if len(members) == 1 or max(members) == min(members):
            out.append(0.0)
        elif name == "grpo":
            out.append((reward - statistics.fmean(members)) / (statistics.stdev(members) + eps))
        elif name == "dr_grpo":
            out.append(reward - statistics.fmean(members))
        elif name == "rloo":
            others = list(members)
            others.remove(reward)  # any one copy: equal values leave the same others
            out.append(reward - statistics.fmean(others))
        else:
            raise ValueError(name)
    return out


def reference_token_loss(
    logp: float, old: float, adv: float, low: float, high: float, dual: float | None, weight: float = 1.0
) -> float:
    """TRL's two-sided clipping per token (see the module docstring), plain floats."""
    r = math.exp(max(-20.0, min(20.0, logp - old)))
    coef_1 = min(r, dual) if dual is not None else r
    coef_2 = min(max(r, 1 - low), 1 + high)
    return -min(coef_1 * adv, coef_2 * adv) * weight


def reference_kl(name: str, logp: float, ref: float) -> float:
    if name in ("k1", "kl"):
        return logp - ref
    if name in ("k2", "mse"):
        return 0.5 * (logp - ref) ** 2
    d = max(-20.0, min(20.0, ref - logp))
    return max(-10.0, min(10.0, math.exp(d) - d - 1))


def reference_aggregate(values: list[list[float]], mask: list[list[bool]], mode: str, norm_length: int = 0) -> float:
    rows = [[v for v, m in zip(row, mrow, strict=True) if m] for row, mrow in zip(values, mask, strict=True)]
    rows = [row for row in rows if row]
    if not rows:
        return 0.0
    if mode == "token-mean":
        return sum(sum(row) for row in rows) / sum(len(row) for row in rows)
    if mode == "seq-mean-token-mean":
        return statistics.fmean(statistics.fmean(row) for row in rows)
    if mode == "seq-mean-token-sum":
        return statistics.fmean(sum(row) for row in rows)
    if mode == "seq-mean-token-sum-norm":
        return sum(sum(row) for row in rows) / (len(rows) * norm_length)
    raise ValueError(mode)
