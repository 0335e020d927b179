"""Token log-probabilities and entropy from vocab-parallel logits, without gathering the vocabulary.

Each tensor-parallel rank holds logits (b, s, V/TP) for its slice of the vocabulary. The log-prob of the next token
is computed by Megatron-Core's `vocab_parallel_cross_entropy` (max and sum-exp all-reduced over TP, the target
logit taken on the rank that owns it; it keeps one (b, s, V/TP) buffer and computes its gradient in place), so
no rank ever holds the full (b, s, V) logits. Entropy uses the same reductions, under no_grad: it is a metric
(upstream has no entropy bonus), and skipping its graph saves two more logits-sized buffers.

Alignment: out[:, t] = log p(tokens[:, t] | tokens[:, :t]) for t >= 1, from the logits at position t - 1;
out[:, 0] = 0. Logits are cast to fp32 and divided by the sampling temperature first, so the log-probs are
those of the distribution the sampler drew from.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def token_log_probs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0, tp_group: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (b, s, V/TP) on each TP rank, tokens (b, s) -> (log_probs (b, s), entropy (b, s)), both fp32."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    tp_group = tp_group if tp_group is not None else parallel_state.get_tensor_model_parallel_group()
    scaled = logits.float()
    if temperature != 1.0:
        scaled = scaled / temperature
    # Every position predicts the next token; the last position's target (wrapped around) is dropped below.
    targets = torch.roll(tokens, shifts=-1, dims=1)
    entropy = _vocab_parallel_entropy(scaled.detach(), tp_group)
    # Megatron's cross entropy shifts its input in place (as in GPTModel's own loss): `scaled` is used up here.
    log_probs = -vocab_parallel_cross_entropy(scaled, targets, tp_group=tp_group)
    zero = log_probs.new_zeros(log_probs.shape[0], 1)
    return torch.cat([zero, log_probs[:, :-1]], dim=1), torch.cat([zero, entropy[:, :-1]], dim=1)


@torch.no_grad()
def _vocab_parallel_entropy(logits: torch.Tensor, tp_group: Any) -> torch.Tensor:
    """H = log Z - sum_v p_v * l_v with the max, Z and the weighted sum reduced over the vocab shards."""
    logits_max = logits.amax(dim=-1)
    dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=tp_group)
    shifted = logits - logits_max.unsqueeze(-1)
    exp = shifted.exp()
    sums = torch.stack([exp.sum(dim=-1), (exp * shifted).sum(dim=-1)])
    dist.all_reduce(sums, group=tp_group)
    sum_exp, weighted = sums[0], sums[1]
    return sum_exp.log() - weighted / sum_exp
