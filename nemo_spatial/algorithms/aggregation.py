"""Loss aggregation: per-token values (B, T) and a response mask (B, T) -> one scalar loss.

Modes (registry `LOSS_AGGREGATIONS`, names as in verl), with m the mask, v the values, S the sequences
that have at least one valid token, and L a fixed length:
- "token-mean" (upstream SpatialThinker):   sum_{i,t} m v / sum_{i,t} m
- "seq-mean-token-mean":                     mean_{i in S} (sum_t m v / sum_t m)
- "seq-mean-token-sum":                      mean_{i in S} (sum_t m v)
- "seq-mean-token-sum-norm" (Dr.GRPO):       sum_{i,t} m v / (|S| * L)
- "upstream-microbatch-mean" (upstream's actual weighting): the mini-batch's sequences, IN ORDER, in groups
  g of U (`algorithm.upstream_microbatch_size`, upstream 4 per GPU), and the mean over the G groups of each
  group's token mean:  (1/G) sum_g (sum_{i in g,t} m v / sum_{i in g,t} m)  =  sum_{i,t} w_i m v  with the
  per-sequence weight w_i = 1 / (G * tokens of i's group) (`upstream_microbatch_weights`). The weights are
  computed once on the whole mini-batch and carried with each sequence (`LossScale.row_weights`, the rows
  of the micro-batch at hand), so the value does not depend on this run's micro-batching or layout.

Global normalisation. A global batch is processed as several micro-batches whose gradients are accumulated.
Normalising each micro-batch by its own token count and averaging the micro-batch losses weights a token of
a short micro-batch more than one of a long micro-batch, so the result depends on how the batch was cut.
Passing `LossScale.for_global_batch(all micro-batch masks)` makes every micro-batch divide by the GLOBAL
denominators (tokens, sequences), so that the SUM of the micro-batch losses equals the loss of the whole batch
in one piece: 1 micro-batch of 4 sequences == 4 micro-batches of 1 (tested). Under data parallelism the
counts must cover every rank's micro-batches; if the gradient reduction averages over ranks (Megatron's
default), multiply the loss by the data-parallel size to keep the sum.

Departure from upstream: upstream EasyR1 normalises each micro-batch of U sequences by its own tokens and
averages the micro-batch losses (over gradient accumulation and FSDP ranks), so a token of a short micro-batch
weighs more than one of a long micro-batch; "token-mean" with a global LossScale (the default) weighs every
token of the mini-batch alike. "upstream-microbatch-mean" restores upstream's weighting exactly, with the
groups upstream would have formed (contiguous DP shares of the mini-batch, micro-batches of U in order).
Sequences without any valid token are left out of the sequence count (verl does the same); they contribute 0
to every mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from nemo_spatial.algorithms.registry import Registry


@dataclass(frozen=True)
class LossScale:
    """Denominators shared by every micro-batch of a global batch; None means "this micro-batch's own"."""

    num_tokens: float | None = None  # valid tokens in the global batch (token-mean)
    num_seqs: float | None = None  # sequences with >= 1 valid token in the global batch (seq-mean-*)
    norm_length: int | None = None  # the constant L of seq-mean-token-sum-norm (Dr.GRPO: max response length)
    # upstream-microbatch-mean: this micro-batch's rows' weights w_i (B,), from `upstream_microbatch_weights`
    row_weights: torch.Tensor | None = None

    @classmethod
    def for_global_batch(cls, response_masks: Iterable[torch.Tensor], norm_length: int | None = None) -> LossScale:
        """The global denominators from the response masks (B_k, T_k) of every micro-batch k."""
        tokens = seqs = 0
        for mask in response_masks:
            valid = mask.bool()
            tokens += int(valid.sum())
            seqs += int(valid.any(dim=-1).sum())
        return cls(num_tokens=float(tokens), num_seqs=float(seqs), norm_length=norm_length)


AggregationFn = Callable[[torch.Tensor, torch.Tensor, LossScale], torch.Tensor]
LOSS_AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation")


def aggregate_loss(
    values: torch.Tensor, response_mask: torch.Tensor, mode: str = "token-mean", scale: LossScale | None = None
) -> torch.Tensor:
    """values (B, T), response_mask (B, T) -> scalar, by the registered `mode`.

    Values at masked positions are ignored even when they are inf or nan (they never reach the result).
    """
    check_same_shape(values=values, response_mask=response_mask)
    return LOSS_AGGREGATIONS.get(mode)(values, response_mask.bool(), scale or LossScale())


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor, scale: LossScale) -> torch.Tensor:
    """sum(m v) / N_tokens; N_tokens = scale.num_tokens or this batch's valid tokens. (B, T) -> ()."""
    denominator = max(scale.num_tokens, 1.0) if scale.num_tokens is not None else mask.sum().clamp(min=1)
    return masked_sum(values, mask) / denominator


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor, scale: LossScale) -> torch.Tensor:
    """sum_i (sum_t m v / sum_t m) / N_seqs. (B, T) -> ()."""
    per_seq = masked_sum(values, mask, dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_seq.sum() / _num_seqs(mask, scale)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(values: torch.Tensor, mask: torch.Tensor, scale: LossScale) -> torch.Tensor:
    """sum_i sum_t m v / N_seqs. (B, T) -> ()."""
    return masked_sum(values, mask) / _num_seqs(mask, scale)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(values: torch.Tensor, mask: torch.Tensor, scale: LossScale) -> torch.Tensor:
    """sum(m v) / (N_seqs * L), L = scale.norm_length (required). (B, T) -> ()."""
    if scale.norm_length is None or scale.norm_length <= 0:
        raise ValueError(
            f"seq-mean-token-sum-norm needs LossScale.norm_length > 0 (the fixed response length), "
            f"got {scale.norm_length}"
        )
    return masked_sum(values, mask) / (_num_seqs(mask, scale) * scale.norm_length)


@LOSS_AGGREGATIONS.register("upstream-microbatch-mean")
def upstream_microbatch_mean(values: torch.Tensor, mask: torch.Tensor, scale: LossScale) -> torch.Tensor:
    """sum_{i,t} w_i m v with w = scale.row_weights (B,) (required; see the module docstring). (B, T) -> ()."""
    if scale.row_weights is None or scale.row_weights.shape != (values.shape[0],):
        raise ValueError(
            "upstream-microbatch-mean needs LossScale.row_weights of shape (B,) = "
            f"({values.shape[0]},): compute them with upstream_microbatch_weights on the whole mini-batch"
        )
    return masked_sum(values * scale.row_weights.to(values.dtype).unsqueeze(-1), mask)


def upstream_microbatch_weights(response_mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """w_i = 1 / (G * valid tokens of i's group) for the mini-batch's rows (B, T) in order, groups of
    `group_size` (the last may be smaller), G = the number of groups. A group without tokens gets weight 0
    and still counts in G (upstream divides every micro-batch by the gradient-accumulation count). -> (B,)."""
    if group_size < 1:
        raise ValueError(f"upstream micro-batch size must be >= 1, got {group_size}")
    rows = response_mask.shape[0]
    tokens = response_mask.bool().sum(dim=-1).to(torch.float64)
    groups = torch.arange(rows) // group_size
    num_groups = int(groups.max()) + 1 if rows else 0
    group_tokens = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, tokens)
    per_row = group_tokens[groups]
    return torch.where(per_row > 0, 1.0 / (num_groups * per_row.clamp(min=1.0)), torch.zeros_like(per_row))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of values where mask is true; masked-out values (even inf/nan) contribute exactly 0."""
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid positions (0 when there are none). Any shape -> ()."""
    mask = mask.bool()
    return masked_sum(values, mask) / mask.sum().clamp(min=1)


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 log-probs are upcast as upstream does; float64 stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def check_same_shape(**tensors: torch.Tensor) -> None:
    """ValueError naming every tensor's shape unless all are (B, T) with the same shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(shape != first for shape in shapes.values()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"expected tensors of one shape (B, T); got {listed}")


def _num_seqs(mask: torch.Tensor, scale: LossScale) -> float | torch.Tensor:
    if scale.num_seqs is not None:
        return max(scale.num_seqs, 1.0)
    return mask.any(dim=-1).sum().clamp(min=1)
