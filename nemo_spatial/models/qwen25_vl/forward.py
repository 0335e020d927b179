"""The forward(-backward) step over micro-batches with Megatron-Core's pipeline schedules.

    records = run_schedule(chunks, micro_batches, compute=..., forward_only=..., temperature=...)

Megatron picks the schedule (`get_forward_backward_func`): no pipelining for PP=1, 1F1B for PP>1 (micro-batches
keep their own padded lengths under PP: `variable_seq_lengths` makes the schedule exchange shapes first). On
every stage the model derives mRoPE ids from the micro-batch's token ids and image grid; the first stage embeds
tokens and images. On the last stage the vocab-parallel logits become token log-probs and entropy
(log_probs.py), masked to real tokens, and `compute(micro_batch, log_probs, entropy)` returns the micro-batch's
loss (its share of the global loss; zero when only evaluating) and a record kept for the caller. Megatron
neither divides that loss by the number of micro-batches nor by a token count (`calculate_per_token_loss`
with our `finalize_model_grads_func`, see optimizer.py). Only the last pipeline stage returns records.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from nemo_spatial.batch import MicroBatch
from nemo_spatial.models.qwen25_vl.log_probs import token_log_probs_and_entropy

ComputeFn = Callable[[MicroBatch, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]


def run_schedule(
    chunks: list[Any],
    micro_batches: list[MicroBatch],
    *,
    compute: ComputeFn,
    forward_only: bool,
    temperature: float = 1.0,
) -> list[dict[str, Any]]:
    """Run every micro-batch through the model chunks; the last stage's records, in micro-batch order."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")

    def forward_step(data_iterator: Any, model: Any) -> tuple[torch.Tensor, Any]:
        micro_batch = next(data_iterator)
        micro_batch = MicroBatch(batch=micro_batch.batch.to(device), rows=micro_batch.rows)
        batch = micro_batch.batch
        output = model(
            input_ids=batch.input_ids,
            attention_mask=None,  # causal; right padding is never attended to by a real token
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
        )
        # A middle stage's hidden states are sent to the next stage, and p2p sends need contiguous memory; the
        # bridge's model leaves the [s, b, h] embeddings transposed, and the residual path keeps those strides.
        return output.contiguous(), partial(_loss_on_last_stage, micro_batch)

    def _loss_on_last_stage(micro_batch: MicroBatch, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        log_probs, entropy = token_log_probs_and_entropy(logits, micro_batch.batch.input_ids, temperature=temperature)
        predicted = micro_batch.batch.attention_mask.clone()
        predicted[:, 0] = False
        log_probs = log_probs * predicted
        entropy = entropy * predicted
        loss, record = compute(micro_batch, log_probs, entropy)
        return loss, torch.ones((), dtype=torch.int), record

    longest = max(mb.batch.input_ids.shape[1] for mb in micro_batches)
    widest = max(mb.batch.batch_size for mb in micro_batches)
    forward_backward = get_forward_backward_func()
    return forward_backward(  # type: ignore[no-any-return]
        forward_step_func=forward_step,
        data_iterator=iter(micro_batches),
        model=chunks,
        num_microbatches=len(micro_batches),
        seq_length=longest,
        micro_batch_size=widest,
        forward_only=forward_only,
    )


def evaluation_record(
    micro_batch: MicroBatch, log_probs: torch.Tensor, entropy: torch.Tensor
) -> tuple[torch.Tensor, dict]:
    """`compute` for log-prob evaluation: no loss, keep the detached per-token values."""
    record = {"rows": micro_batch.rows, "log_probs": log_probs.detach().cpu(), "entropy": entropy.detach().cpu()}
    return log_probs.new_zeros(()), record
