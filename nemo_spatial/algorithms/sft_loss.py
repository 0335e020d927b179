"""The supervised fine-tuning loss: cross-entropy on the target tokens only, token-mean over the GLOBAL batch.

Per micro-batch, with log_probs[b, t] = log p(x_t | x_<t) of the target token x_t and m the target mask
(True on the target's tokens: the answer text and its closing <|im_end|>, never the prompt or padding):
    loss = -sum_{b,t} m * log_probs / N_tokens
where N_tokens is the number of target tokens in the WHOLE global batch (`LossScale.num_tokens`), so the
micro-batch losses sum to the global batch's token-mean cross-entropy whatever the micro-batching and data
parallel layout (1 micro-batch of 4 == 4 of 1, DP=2 == DP=1). Without a LossScale the micro-batch's own
token count is used. This is "token-mean" aggregation (aggregation.py), the loss LLaMA-Factory and
transformers' Trainer compute for a causal LM (mean over the non-ignored label tokens of a batch).

Metrics: `num_tokens` (target tokens; a SUM metric over micro-batches and DP ranks, so the global count)
and `token_accuracy` (the share of target tokens whose log-prob exceeds log 0.5, i.e. certainly the argmax;
averaged over micro-batches). The loss itself is the policy's `loss` metric (summed: the global mean).
Departures: none in the value. Padded and prompt positions are zeroed before the sum, so a -inf log-prob
there (e.g. a token the model gives probability 0) never reaches the loss or its gradient.
"""

from __future__ import annotations

import torch

from nemo_spatial.algorithms.aggregation import LossScale, aggregate_loss, check_same_shape, masked_mean, upcast
from nemo_spatial.parallel.collectives import Metric, Reduction

CONFIDENT_LOG_PROB = -0.6931471805599453  # log 0.5: a token above it is the argmax whatever the others


def sft_loss(
    log_probs: torch.Tensor, target_mask: torch.Tensor, scale: LossScale | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, metrics) of a micro-batch: log_probs (B, T) of the actual tokens, target_mask (B, T)."""
    check_same_shape(log_probs=log_probs, target_mask=target_mask)
    mask = target_mask.bool()
    nll = -upcast(log_probs)
    loss = aggregate_loss(nll, mask, "token-mean", scale)
    confident = (log_probs.detach() > CONFIDENT_LOG_PROB).to(nll.dtype)
    metrics: dict[str, float] = {
        "num_tokens": Metric(float(mask.sum()), Reduction.SUM),  # the global batch's target tokens
        "token_accuracy": Metric(float(masked_mean(confident, mask)), Reduction.MEAN),
    }
    return loss, metrics
