"""The Megatron policy that GRPO trains: Qwen2.5-VL sharded with tensor, pipeline, sequence and data parallelism.

    policy = MegatronPolicy(cfg.policy, cfg.parallel, seed=cfg.run.seed)     # on every rank (SPMD)
    rank, size = policy.data_shard                                           # this rank's share of the samples
    log_probs, entropy = policy.compute_log_probs(batch)                      # (B, S) each, for batch's rows
    ref = policy.reference_log_probs(batch)
    metrics = policy.train_step(batch, loss_fn)                              # one optimizer step
    for name, tensor in policy.named_hf_weights(): ...                       # full HF tensors, every rank
    policy.save_checkpoint(path); policy.load_checkpoint(path)
    policy.export_hf(trainer_checkpoint)                                     # HF model in <run>/hf/step_N
    policy.offload_to_host(); ...; policy.reload_to_device()                 # colocated generation phase

Data: each rank passes the batch of ITS data-parallel rank's samples (`PolicyBatch`, nemo_spatial/batch.py):
the rows `data_shard` names (ranks of one DP group, TP/PP peers, pass the same rows). The policy cuts it into
length-sorted micro-batches padded to their own longest, and returns results for those rows (broadcast from
the last pipeline stage). Metrics and the loss denominators are global: reduced over DP.

The loss-function contract (`LossFn`; the GRPO actor loss, an SFT cross-entropy, any other):
    loss, metrics = loss_fn(log_probs, micro_batch, scale)
- `log_probs` (b, s) fp32, differentiable: log p(token t | tokens < t) of the micro-batch's rows (0 at
  position 0 and on padding);
- `micro_batch` the `PolicyBatch` of those rows (its `response_mask` says which tokens are trained; the loss
  reads the fields it needs, e.g. `advantages`, `old_log_probs`, `ref_log_probs`, `rollout_log_probs`, and
  raises a clear error when one is missing; train_step itself requires none of them);
- `scale` the GLOBAL batch's valid-token and sequence counts (nemo_spatial.algorithms.aggregation.LossScale,
  over every DP rank) so that the micro-batch losses SUM to the loss of the whole batch (the loss divides by
  them; gradients are summed over micro-batches and DP ranks). Hence 1 micro-batch of 4 == 4 micro-batches of
  1, and DP=2 == DP=1, up to float rounding.
- `metrics` {name: float}; each value a `parallel.collectives.Metric` declaring its reduction over micro-batches
  and DP ranks (SUM for a share of a global quantity, MAX, MEAN), a plain float being a MEAN.
The policy adds "loss" (SUM) and "entropy" (MEAN); train_step returns the reduced metrics (the same on every
rank) with grad_norm, skipped, lr and step_seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nemo_spatial.algorithms.aggregation import LossScale
from nemo_spatial.batch import MicroBatch, PolicyBatch, make_micro_batches, scatter_rows
from nemo_spatial.errors import ConfigError
from nemo_spatial.models.qwen25_vl.config import PolicyConfig
from nemo_spatial.parallel.collectives import (
    Metric,
    MetricGroups,
    Reduction,
    all_reduce_sum,
    broadcast_from_last_stage,
    reduce_metrics,
)
from nemo_spatial.parallel.config import ParallelConfig
from nemo_spatial.parallel.layout import check_sequence_length

LossFn = Callable[[torch.Tensor, PolicyBatch, LossScale], tuple[torch.Tensor, dict[str, float]]]
FP8_TOKEN_ALIGNMENT = 16


class MegatronPolicy:
    """Qwen2.5-VL under Megatron-Core, initialised from `cfg.hf_path` through Megatron-Bridge."""

    def __init__(self, cfg: PolicyConfig, parallel: ParallelConfig, seed: int = 1) -> None:
        from megatron.core.utils import get_model_config

        from nemo_spatial.models.qwen25_vl.bridge import load_model
        from nemo_spatial.models.qwen25_vl.fp8 import check_fp8_supported
        from nemo_spatial.models.qwen25_vl.offload import HostOffload
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
        # Optimizer state to host memory (on CUDA) and grad buffers freed while a colocated vLLM generates.
        self.offload = HostOffload(self.chunks, self.optimizer, copy_state=self.state.device.type == "cuda")

    # ---- evaluation -------------------------------------------------------------------------------------
    def compute_log_probs(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_probs, entropy), each (B, S) fp32 on the CPU; 0 at position 0 and on padding."""
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
        rows, length = batch.batch_size, batch.input_ids.shape[1]
        return self._gather(records, "log_probs", rows, length), self._gather(records, "entropy", rows, length)

    def reference_log_probs(self, batch: PolicyBatch) -> torch.Tensor:
        """Log-probs under the initial weights (the KL reference), (B, S)."""
        if self.reference is None:
            raise ConfigError("policy.reference=none keeps no reference weights; set policy.reference=cpu for KL")
        with self.reference.swapped_in(self.chunks):
            log_probs, _ = self.compute_log_probs(batch)
        return log_probs

    # ---- training ---------------------------------------------------------------------------------------
    def train_step(self, batch: PolicyBatch, loss_fn: LossFn) -> dict[str, float]:
        """Forward/backward over all micro-batches, clip, and one optimizer step (skipped on a non-finite norm)."""
        from nemo_spatial.models.qwen25_vl.forward import run_schedule
        from nemo_spatial.models.qwen25_vl.optimizer import optimizer_step, zero_grads

        self._require_on_device("train_step")
        started = time.perf_counter()
        local = LossScale.for_global_batch([batch.response_mask])
        assert local.num_tokens is not None and local.num_seqs is not None
        tokens, seqs = all_reduce_sum([local.num_tokens, local.num_seqs], self._groups(data=True))
        scale = LossScale(num_tokens=tokens, num_seqs=seqs)
        micro_batches = self._micro_batches(batch)
        for chunk in self.chunks:
            chunk.train()
        zero_grads(self.chunks, self.optimizer)

        def compute(
            micro_batch: MicroBatch, log_probs: torch.Tensor, entropy: torch.Tensor
        ) -> tuple[torch.Tensor, dict]:
            mb = micro_batch.batch
            loss, metrics = loss_fn(log_probs, mb, scale)
            entropy_mean = (entropy * mb.response_mask).sum() / mb.response_mask.sum().clamp(min=1)
            own = {"loss": Metric(float(loss.detach()), Reduction.SUM), "entropy": Metric(float(entropy_mean))}
            return loss, {**own, **_floats(metrics)}

        records = run_schedule(
            self.chunks, micro_batches, compute=compute, forward_only=False, temperature=self.cfg.temperature
        )
        result = optimizer_step(self.optimizer, self.scheduler)
        if not result.skipped:
            self.step += 1
        metrics: dict[str, float] = dict(reduce_metrics(records, self._groups(data=True)))
        metrics.update(
            grad_norm=result.grad_norm,
            skipped=Metric(float(result.skipped), Reduction.MAX),
            lr=result.lr,
            step_seconds=time.perf_counter() - started,
        )
        return metrics

    # ---- the colocated generation phase -----------------------------------------------------------------
    def offload_to_host(self) -> dict[str, float]:
        """Free this rank's grad buffers and move its optimizer state to pinned host memory (models/qwen25_vl/
        offload.py; the weights stay, for the refit); timing/offload_s and the bytes. Idempotent."""
        return self.offload.offload()

    def reload_to_device(self) -> dict[str, float]:
        """Undo `offload_to_host` before the next forward/backward (grads re-allocated zeroed); timing/reload_s."""
        return self.offload.reload(self.state.device)

    def _require_on_device(self, what: str) -> None:
        if self.offload.offloaded:
            raise RuntimeError(f"MegatronPolicy.{what} needs the optimizer state and grads: call reload_to_device()")

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

        self._require_on_device("save_checkpoint")
        save_policy_checkpoint(path, self.chunks, self.optimizer, self.scheduler, self.layout, self.step)

    def export_hf(self, checkpoint: str) -> str:
        """Write the weights held now as a Hugging Face model next to the trainer checkpoint `checkpoint`
        (`<run>/hf/<step_N>`, collective; hf_export.export_policy); returns that directory."""
        from pathlib import Path

        from nemo_spatial.models.qwen25_vl.hf_export import export_policy

        return str(export_policy(self.chunks, self.bridge, Path(checkpoint)))

    def load_checkpoint(self, path: str, load_optimizer: bool | None = None) -> dict[str, Any]:
        """The policy step continues from the checkpoint in any case; Adam's own step count comes back with its
        state, or restarts at 0 with fresh moments when only the model loads (see checkpoint.py)."""
        from nemo_spatial.models.qwen25_vl.checkpoint import load_policy_checkpoint

        self._require_on_device("load_checkpoint")
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
        if batch.batch_size % self.cfg.micro_batch_size != 0:
            raise ValueError(
                f"this data-parallel rank's {batch.batch_size} samples do not split into micro_batch_size="
                f"{self.cfg.micro_batch_size}; pass {self.sample_multiple // self.layout.data}x as many per rank"
            )
        return make_micro_batches(batch, self.cfg.micro_batch_size, self._length_multiple)

    @property
    def data_shard(self) -> tuple[int, int]:
        """(this rank's data-parallel rank, DP size): the caller passes the rank's contiguous share of the rows."""
        return self.state.data_rank, self.layout.data

    @property
    def sample_multiple(self) -> int:
        """Every batch must hold a multiple of this many samples: DP ranks x micro-batch size."""
        return self.layout.data * self.cfg.micro_batch_size

    @property
    def _length_multiple(self) -> int:
        """Padded lengths: what SP / CP split, and 16 under FP8 (TE's FP8 GEMMs need 16-aligned token counts)."""
        multiple = self.layout.sequence_multiple
        return math.lcm(multiple, FP8_TOKEN_ALIGNMENT) if self.cfg.fp8.enabled else multiple

    def _groups(self, data: bool) -> MetricGroups:
        """This rank's pipeline group (results come from its last stage) and, when `data`, its DP group."""
        from megatron.core import parallel_state

        pipeline = self.layout.pipeline > 1
        return MetricGroups(
            device=self.state.device,  # NCCL collectives need the tensors on the GPU
            pp_group=parallel_state.get_pipeline_model_parallel_group() if pipeline else None,
            pp_last_rank=parallel_state.get_pipeline_model_parallel_last_rank() if pipeline else 0,
            dp_group=parallel_state.get_data_parallel_group() if data and self.layout.data > 1 else None,
        )

    def _gather(self, records: list[dict], key: str, rows: int, length: int) -> torch.Tensor:
        """(rows, length) from this rank's records on the last stage, on every pipeline stage."""
        local = torch.zeros(rows, length)
        if self.state.is_pipeline_last:
            local = scatter_rows([(r["rows"], r[key]) for r in records], rows, length)
        return broadcast_from_last_stage(local.to(self.state.device), self._groups(data=False)).cpu()


def _floats(metrics: dict[str, float]) -> dict[str, float]:
    """Plain numbers (tensors, numpy) as floats, keeping a `Metric`'s declared reduction."""
    return {key: value if isinstance(value, Metric) else float(value) for key, value in metrics.items()}
