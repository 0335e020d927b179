"""The Megatron policy that GRPO trains: Qwen2.5-VL sharded with tensor, pipeline, sequence and data parallelism.

    policy = MegatronPolicy(cfg.policy, cfg.parallel, seed=cfg.run.seed)     # on every rank (SPMD)
    logprobs, entropy = policy.compute_logprobs(batch)                      # (B, S) each, on every rank
    ref = policy.reference_logprobs(batch)
    metrics = policy.train_step(batch, loss_fn)                              # one optimizer step
    for name, tensor in policy.named_hf_weights(): ...                       # full HF tensors, every rank
    policy.save_checkpoint(path); policy.load_checkpoint(path)

Data: every rank passes the same GLOBAL batch (a `PolicyBatch`); the policy takes its data-parallel share
(contiguous rows), cuts it into length-sorted micro-batches (batch.py), and returns results for the whole
batch on every rank (all-gathered over DP, broadcast from the last pipeline stage).

The loss function is a plain function of tensors, called once per micro-batch on the last pipeline stage:
    loss, metrics = loss_fn(logprobs, old_logprobs, ref_logprobs, advantages, response_mask,
                            scale=LossScale, **batch.extras)
with every tensor (b, s) for the micro-batch's rows (advantages as given: (b,) or (b, s)); `scale` holds the
GLOBAL batch's valid-token and sequence counts (nemo_spatial.algorithms.aggregation.LossScale) so that the
micro-batch losses SUM to the loss of the whole batch (the loss function divides by them; gradients are
summed over micro-batches and DP ranks). Hence 1 micro-batch of 4 == 4 micro-batches of 1, and DP=2 == DP=1,
up to float rounding. `metrics` combine over micro-batches and DP ranks: losses and token counts are the global
batch's (summed), maxima maxed, the rest averaged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from nemo_spatial.algorithms.aggregation import LossScale
from nemo_spatial.algorithms.loss import metric_reduction
from nemo_spatial.config import ConfigError
from nemo_spatial.models.qwen25_vl.batch import MicroBatch, PolicyBatch, make_micro_batches, scatter_rows
from nemo_spatial.models.qwen25_vl.config import PolicyConfig
from nemo_spatial.parallel.config import ParallelConfig
from nemo_spatial.parallel.layout import check_sequence_length

LossFn = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
FP8_TOKEN_ALIGNMENT = 16


class MegatronPolicy:
    """Qwen2.5-VL under Megatron-Core, initialised from `cfg.hf_path` through Megatron-Bridge."""

    def __init__(self, cfg: PolicyConfig, parallel: ParallelConfig, seed: int = 1) -> None:
        from megatron.core.utils import get_model_config

        from nemo_spatial.models.qwen25_vl.bridge import load_model
        from nemo_spatial.models.qwen25_vl.fp8 import check_fp8_supported
        from nemo_spatial.models.qwen25_vl.optimizer import build_optimizer, ddp_config, install_grad_hooks
        from nemo_spatial.models.qwen25_vl.reference import HostReference
        from nemo_spatial.parallel.state import initialize, transformer_engine_available

        cuda = torch.cuda.is_available()
        check_fp8_supported(
            cfg.fp8,
            cuda_available=cuda,
            transformer_engine=transformer_engine_available(),
            capability=torch.cuda.get_device_capability() if cuda else None,
        )
        self.cfg = cfg
        self.state = initialize(parallel, seed=seed)
        self.layout = self.state.layout
        check_sequence_length(self.layout, cfg.max_seq_length, name="policy.max_seq_length")
        loaded = load_model(cfg, self.layout, ddp_config(cfg.optimizer, fp8_param_gather=cfg.fp8.param_gather))
        self.chunks, self.bridge, self.provider = loaded.chunks, loaded.bridge, loaded.provider
        self.model_config = get_model_config(self.chunks[0])
        install_grad_hooks(self.chunks, self.model_config)
        self.optimizer, self.scheduler = build_optimizer(cfg.optimizer, self.chunks, self.model_config)
        if cfg.init_checkpoint:  # before the reference copy: the KL reference is the run's initial weights
            self._load_initial_weights(cfg.init_checkpoint)
        self.reference = HostReference(self.chunks) if cfg.reference == "cpu" else None
        self.step = 0

    # ---- evaluation -------------------------------------------------------------------------------------
    def compute_logprobs(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs, entropy), each (B, S) fp32 on the CPU; 0 at position 0 and on padding."""
        from nemo_spatial.models.qwen25_vl.forward import evaluation_record, run_schedule

        micro_batches = self._micro_batches(batch)
        for chunk in self.chunks:
            chunk.eval()
        with torch.no_grad():
            records = run_schedule(
                self.chunks,
                micro_batches,
                compute=evaluation_record,
                forward_only=True,
                temperature=self.cfg.temperature,
            )
        local = self._local_rows(micro_batches)
        length = batch.input_ids.shape[1]
        logprobs = self._gather(records, "logprobs", local, length)
        entropy = self._gather(records, "entropy", local, length)
        return logprobs, entropy

    def reference_logprobs(self, batch: PolicyBatch) -> torch.Tensor:
        """Log-probs under the initial weights (the KL reference), (B, S)."""
        if self.reference is None:
            raise ConfigError("policy.reference=none keeps no reference weights; set policy.reference=cpu for KL")
        with self.reference.swapped_in(self.chunks):
            logprobs, _ = self.compute_logprobs(batch)
        return logprobs

    # ---- training ---------------------------------------------------------------------------------------
    def train_step(self, batch: PolicyBatch, loss_fn: LossFn) -> dict[str, float]:
        """Forward/backward over all micro-batches, clip, and one optimizer step (skipped on a non-finite norm)."""
        from nemo_spatial.models.qwen25_vl.forward import run_schedule
        from nemo_spatial.models.qwen25_vl.optimizer import optimizer_step, zero_grads

        if batch.advantages is None:
            raise ValueError("train_step needs batch.advantages")
        started = time.perf_counter()
        scale = LossScale.for_global_batch([batch.response_mask])
        micro_batches = self._micro_batches(batch)
        for chunk in self.chunks:
            chunk.train()
        zero_grads(self.chunks, self.optimizer)

        def compute(
            micro_batch: MicroBatch, logprobs: torch.Tensor, entropy: torch.Tensor
        ) -> tuple[torch.Tensor, dict]:
            mb = micro_batch.batch
            loss, metrics = loss_fn(
                logprobs, mb.old_logprobs, mb.ref_logprobs, mb.advantages, mb.response_mask, scale=scale, **mb.extras
            )
            entropy_mean = (entropy * mb.response_mask).sum() / mb.response_mask.sum().clamp(min=1)
            return loss, {"loss": float(loss.detach()), "entropy": float(entropy_mean), **_floats(metrics)}

        records = run_schedule(
            self.chunks, micro_batches, compute=compute, forward_only=False, temperature=self.cfg.temperature
        )
        result = optimizer_step(self.optimizer, self.scheduler)
        if not result.skipped:
            self.step += 1
        metrics = self._reduce_metrics(records)
        metrics.update(
            grad_norm=result.grad_norm,
            skipped=float(result.skipped),
            lr=result.lr,
            step_seconds=time.perf_counter() - started,
        )
        return metrics

    # ---- weights and checkpoints ------------------------------------------------------------------------
    def named_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor on the CPU) for every weight, gathered from the TP/PP shards (collective).

        The tensors are the caller's: on a CPU-only machine the bridge can hand out a parameter itself (an
        unsharded one needs no gather or move), and such a tensor is cloned so that training does not change it.
        """
        live = {p.untyped_storage().data_ptr() for chunk in self.chunks for p in chunk.parameters()}
        for name, tensor in self.bridge.export_hf_weights(self.chunks, cpu=True, show_progress=False):
            yield name, tensor.clone() if tensor.untyped_storage().data_ptr() in live else tensor

    def save_checkpoint(self, path: str) -> None:
        from nemo_spatial.models.qwen25_vl.checkpoint import save_policy_checkpoint

        save_policy_checkpoint(path, self.chunks, self.optimizer, self.scheduler, self.layout, self.step)

    def load_checkpoint(self, path: str, load_optimizer: bool | None = None) -> dict[str, Any]:
        """The policy step continues from the checkpoint in any case; Adam's own step count comes back with its
        state, or restarts at 0 with fresh moments when only the model loads (see checkpoint.py)."""
        from nemo_spatial.models.qwen25_vl.checkpoint import load_policy_checkpoint

        info = load_policy_checkpoint(path, self.chunks, self.optimizer, self.scheduler, self.layout, load_optimizer)
        self.step = int(info["step"])
        return info

    def _load_initial_weights(self, location: str) -> None:
        """`policy.init_checkpoint`: the model's weights from a Megatron checkpoint (any layout), Adam fresh."""
        from nemo_spatial.models.qwen25_vl.checkpoint import load_policy_checkpoint, resolve_init_checkpoint

        path = resolve_init_checkpoint(location)
        load_policy_checkpoint(path, self.chunks, self.optimizer, self.scheduler, self.layout, load_optimizer=False)
        self.step = 0  # a new run: its own step count and learning-rate schedule

    # ---- helpers ----------------------------------------------------------------------------------------
    def _micro_batches(self, batch: PolicyBatch) -> list[MicroBatch]:
        longest = int(batch.lengths.max())
        if longest > self.cfg.max_seq_length:
            raise ValueError(
                f"a sample has {longest} tokens, more than policy.max_seq_length={self.cfg.max_seq_length}; "
                "truncate the responses or raise policy.max_seq_length"
            )
        data = self.layout.data
        if batch.batch_size % self.sample_multiple != 0:
            raise ValueError(
                f"a batch of {batch.batch_size} samples does not split into DP={data} ranks x micro_batch_size="
                f"{self.cfg.micro_batch_size}; pass a multiple of {self.sample_multiple} samples"
            )
        offset = self.state.data_rank * (batch.batch_size // data)
        local = batch.shard(self.state.data_rank, data)
        micro_batches = make_micro_batches(local, self.cfg.micro_batch_size, self._length_multiple)
        for mb in micro_batches:
            mb.rows = mb.rows + offset
        return micro_batches

    @property
    def sample_multiple(self) -> int:
        """Every batch must hold a multiple of this many samples: DP ranks x micro-batch size."""
        return self.layout.data * self.cfg.micro_batch_size

    @property
    def _length_multiple(self) -> int:
        """Padded lengths: what SP / CP split, and 16 under FP8 (TE's FP8 GEMMs need 16-aligned token counts)."""
        multiple = self.layout.sequence_multiple
        return math.lcm(multiple, FP8_TOKEN_ALIGNMENT) if self.cfg.fp8.enabled else multiple

    @staticmethod
    def _local_rows(micro_batches: list[MicroBatch]) -> torch.Tensor:
        return torch.cat([mb.rows for mb in micro_batches]).sort().values

    def _gather(self, records: list[dict], key: str, local_rows: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length) from this DP rank's records on the last stage: broadcast over PP, all-gather over DP."""
        from megatron.core import parallel_state

        offset = int(local_rows.min())
        local = torch.zeros(len(local_rows), length)
        if self.state.is_pipeline_last:
            local = scatter_rows([(r["rows"] - offset, r[key]) for r in records], len(local_rows), length)
        local = local.to(self.state.device)  # NCCL collectives need the tensors on the GPU
        if self.layout.pipeline > 1:
            dist.broadcast(
                local,
                src=parallel_state.get_pipeline_model_parallel_last_rank(),
                group=parallel_state.get_pipeline_model_parallel_group(),
            )
        if self.layout.data > 1:
            pieces = [torch.empty_like(local) for _ in range(self.layout.data)]
            dist.all_gather(pieces, local, group=parallel_state.get_data_parallel_group())
            local = torch.cat(pieces)
        return local.cpu()

    def _reduce_metrics(self, records: list[dict]) -> dict[str, float]:
        """Global-batch metrics from the micro-batches of every DP rank (see `metric_reduction`): the same on
        every rank. Losses and token counts are summed, maxima maxed, the rest averaged over micro-batches."""
        from megatron.core import parallel_state

        keys = sorted({key for record in records for key in record})
        keys = _broadcast_object(keys, self.layout.pipeline > 1)
        values = [[r[k] for r in records if k in r] for k in keys]
        sums = torch.tensor([[sum(v), len(v)] for v in values], dtype=torch.float64).reshape(len(keys), 2)
        maxima = torch.tensor([max(v, default=-math.inf) for v in values], dtype=torch.float64)
        sums, maxima = sums.to(self.state.device), maxima.to(self.state.device)
        for tensor in (sums, maxima):
            if self.layout.pipeline > 1:
                dist.broadcast(
                    tensor,
                    src=parallel_state.get_pipeline_model_parallel_last_rank(),
                    group=parallel_state.get_pipeline_model_parallel_group(),
                )
        if self.layout.data > 1:
            dist.all_reduce(sums, group=parallel_state.get_data_parallel_group())
            dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=parallel_state.get_data_parallel_group())
        out = {}
        for key, (total, count), peak in zip(keys, sums.cpu().tolist(), maxima.cpu().tolist(), strict=True):
            reduction = metric_reduction(key)
            out[key] = total if reduction == "sum" else peak if reduction == "max" else total / max(count, 1.0)
        return out


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


def _broadcast_object(value: Any, needed: bool) -> Any:
    """The last pipeline stage's `value` on every stage (only the last stage computes losses)."""
    if not needed:
        return value
    from megatron.core import parallel_state

    box = [value]
    dist.broadcast_object_list(
        box,
        src=parallel_state.get_pipeline_model_parallel_last_rank(),
        group=parallel_state.get_pipeline_model_parallel_group(),
    )
    return box[0]
