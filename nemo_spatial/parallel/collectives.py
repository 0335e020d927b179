"""Every collective the loop and the policy share, in one place: decisions, driver work, metric reductions.

- `Collectives` (the loop's view; `TorchCollectives` over torch.distributed, `LocalCollectives` for one process):
  `run_on_driver(work)` runs `work` on global rank 0 and hands its result (or its failure) to every rank;
  `any_rank(flag)` is true everywhere when true somewhere (a preemption signal may reach one rank only);
  `all_gather(value)`; `scatter_from_driver(make)` hands rank r the object `make(r)` the driver built (each
  rank's own prompts); `barrier()`. A test may inject its own (`LocalCollectives` is one process).
- Metric reductions, declared per metric: a metric is a `Metric` (a float that carries its `Reduction`); a
  plain float is a mean. `reduce_metrics(records)` combines per-micro-batch records into the global batch's,
  over DP ranks too (`dp_group`), after taking them from the last pipeline stage (`pp_group`).
- `broadcast_from_last_stage(value, ...)`: the last pipeline stage's tensor or object on every stage (only that
  stage computes losses and log-probs).
Megatron is never imported here: the policy passes its process groups in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


class DriverFailedError(RuntimeError):
    """Raised on the other ranks when the driver's work (generation, reward) failed; the driver raises its own."""


class Collectives(Protocol):
    """What the loop needs from its process group."""

    @property
    def is_driver(self) -> bool: ...

    def run_on_driver(self, work: Callable[[], T]) -> T: ...

    def any_rank(self, value: bool) -> bool: ...

    def all_gather(self, value: T) -> list[T]: ...

    def scatter_from_driver(self, make: Callable[[int], T] | None) -> T:
        """Rank r gets `make(r)`, built on the driver (`make` is None elsewhere)."""
        ...

    def barrier(self) -> None: ...


class TorchCollectives:
    """`Collectives` over the default torch.distributed group (a single process when none is initialised)."""

    @property
    def is_driver(self) -> bool:
        return not dist.is_initialized() or dist.get_rank() == 0

    @property
    def _several(self) -> bool:
        return dist.is_initialized() and dist.get_world_size() > 1

    def run_on_driver(self, work: Callable[[], T]) -> T:
        """Run `work` on the driver and hand its (picklable) result to every rank.

        A failure on the driver (a dead generation server, an unreachable reward service) is broadcast too, so
        every rank stops with it instead of waiting in the collective until its timeout.
        """
        result: Any = None
        failure: BaseException | None = None
        if self.is_driver:
            try:
                result = work()
            except Exception as error:  # noqa: BLE001 - re-raised below on every rank
                failure = error
        if self._several:
            box = [(result, None if failure is None else f"{type(failure).__name__}: {failure}")]
            dist.broadcast_object_list(box, src=0)
            result, message = box[0]
            if message is not None and failure is None:
                raise DriverFailedError(f"rank 0 failed: {message}")
        if failure is not None:
            raise failure
        return result  # type: ignore[no-any-return]

    def any_rank(self, value: bool) -> bool:
        if not self._several:
            return value
        flag = torch.tensor([1 if value else 0], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def all_gather(self, value: T) -> list[T]:
        if not self._several:
            return [value]
        values: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values

    def scatter_from_driver(self, make: Callable[[int], T] | None) -> T:
        if not self._several:
            assert make is not None
            return make(0)
        box: list[Any] = [None]
        pieces = [make(rank) for rank in range(dist.get_world_size())] if self.is_driver and make else None
        dist.scatter_object_list(box, pieces, src=0)
        return box[0]  # type: ignore[no-any-return]

    def barrier(self) -> None:
        if self._several:
            dist.barrier()


@dataclass
class LocalCollectives:
    """One process: runs the driver's work itself (or, as `is_driver=False`, only when asked to play the driver)."""

    is_driver: bool = True

    def run_on_driver(self, work: Callable[[], T]) -> T:
        return work()

    def any_rank(self, value: bool) -> bool:
        return value

    def all_gather(self, value: T) -> list[T]:
        return [value]

    def scatter_from_driver(self, make: Callable[[int], T] | None) -> T:
        assert make is not None, "one process is its own driver"
        return make(0)

    def barrier(self) -> None:
        return None


def run_on_driver[T](work: Callable[[], T], is_driver: bool) -> T:
    """`TorchCollectives().run_on_driver` for callers that decide who the driver is themselves."""
    collectives = TorchCollectives()
    if collectives.is_driver != is_driver:
        raise ValueError(f"is_driver={is_driver} disagrees with this process's rank")
    return collectives.run_on_driver(work)


def any_rank(value: bool) -> bool:
    """True on every rank when `value` is true on at least one (a collective; plain `value` without one)."""
    return TorchCollectives().any_rank(value)


# ---- metric reductions ------------------------------------------------------------------------------------
class Reduction(StrEnum):
    """How per-micro-batch values of a metric combine into the global batch's."""

    SUM = "sum"  # a share of a global quantity (a loss under the global LossScale, a token count)
    MAX = "max"
    MEAN = "mean"  # averaged over micro-batches (the default of a plain float)


class Metric(float):
    """A float that says how it reduces: `Metric(value, Reduction.SUM)`. Arithmetic gives plain floats."""

    reduction: Reduction

    def __new__(cls, value: float, reduction: Reduction = Reduction.MEAN) -> Metric:
        out = super().__new__(cls, value)
        out.reduction = Reduction(reduction)
        return out

    def __reduce__(self) -> tuple[type[Metric], tuple[float, Reduction]]:  # pickles with its reduction
        return (Metric, (float(self), self.reduction))


def reduction_of(value: float) -> Reduction:
    return value.reduction if isinstance(value, Metric) else Reduction.MEAN


def combine_records(records: Sequence[Mapping[str, float]]) -> dict[str, Metric]:
    """Combine records in one process by each metric's declared reduction (a mean over the records holding it)."""
    keys = sorted({key for record in records for key in record})
    out: dict[str, Metric] = {}
    for key in keys:
        values = [record[key] for record in records if key in record]
        reduction = reduction_of(values[0])
        if reduction is Reduction.SUM:
            value = sum(values)
        elif reduction is Reduction.MAX:
            value = max(values)
        else:
            value = sum(values) / len(values)
        out[key] = Metric(float(value), reduction)
    return out


@dataclass
class MetricGroups:
    """Where per-micro-batch metric records live: the last pipeline stage holds them; DP ranks each hold some."""

    device: torch.device
    pp_group: Any = None  # a torch ProcessGroup, or None without pipeline parallelism
    pp_last_rank: int = 0  # global rank of the last stage in this rank's pipeline group
    dp_group: Any = None  # None without data parallelism


def reduce_metrics(records: Sequence[Mapping[str, float]], groups: MetricGroups | None = None) -> dict[str, Metric]:
    """The global batch's metrics from every DP rank's per-micro-batch records; the same on every rank."""
    groups = groups or MetricGroups(torch.device("cpu"))
    keys = sorted({key for record in records for key in record})
    reductions = {key: reduction_of(next(r[key] for r in records if key in r)) for key in keys}
    keys, reductions = broadcast_from_last_stage((keys, reductions), groups)
    values = [[float(r[k]) for r in records if k in r] for k in keys]
    sums = torch.tensor([[sum(v), len(v)] for v in values], dtype=torch.float64).reshape(len(keys), 2)
    maxima = torch.tensor([max(v, default=-math.inf) for v in values], dtype=torch.float64)
    sums, maxima = sums.to(groups.device), maxima.to(groups.device)
    if groups.pp_group is not None:
        sums = broadcast_from_last_stage(sums, groups)
        maxima = broadcast_from_last_stage(maxima, groups)
    if groups.dp_group is not None:
        dist.all_reduce(sums, group=groups.dp_group)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=groups.dp_group)
    out: dict[str, Metric] = {}
    for key, (total, count), peak in zip(keys, sums.cpu().tolist(), maxima.cpu().tolist(), strict=True):
        reduction = reductions[key]
        value = total if reduction is Reduction.SUM else peak if reduction is Reduction.MAX else total / max(count, 1)
        out[key] = Metric(value, reduction)
    return out


def broadcast_from_last_stage[T](value: T, groups: MetricGroups) -> T:
    """The last pipeline stage's `value` (a tensor, in place, or a picklable object) on every stage."""
    if groups.pp_group is None:
        return value
    if isinstance(value, torch.Tensor):
        dist.broadcast(value, src=groups.pp_last_rank, group=groups.pp_group)
        return value
    box = [value]
    dist.broadcast_object_list(box, src=groups.pp_last_rank, group=groups.pp_group)
    return box[0]  # type: ignore[no-any-return]


def all_reduce_sum(values: list[float], groups: MetricGroups) -> list[float]:
    """Sums of `values` over the DP group (each DP rank contributes its own rows' counts)."""
    if groups.dp_group is None:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=groups.device)
    dist.all_reduce(tensor, group=groups.dp_group)
    return [float(v) for v in tensor.cpu().tolist()]
