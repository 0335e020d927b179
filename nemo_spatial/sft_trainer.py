"""The supervised fine-tuning loop: prompt + SpatialThinker-format target -> cross-entropy on the target tokens.

One step: the next `sft.batch_size` prompts of the training stream (the same seeded, resumable stream and the
same prompt text and image processing as GRPO), each with its target text (data/sft_target.py) tokenized and
closed by the tokenizer's end-of-turn token (<|im_end|>, where generation stops); `build_sft_batch` puts
prompt + target in one row with the target marked as the trained tokens; `policy.train_step` with
`sft_loss` (token-mean over the global batch) and one optimizer step (AdamW with the policy's warm-up and decay,
`policy.optimizer.lr_*`). Every `sft.val_every` steps: the validation loss (the same loss, no gradient) and,
with `sft.val_reward`, the validation reward: the weights go to the generation server, which samples one
response per validation prompt (`generation.val_sampling`), scored by the configured reward (`val/reward/*`;
the first 8 responses with their rewards in `<run dir>/validation/step_N.jsonl`).
Checkpoints, resume and preemption are the GRPO trainer's (nemo_spatial/checkpoint.py): a checkpoint every
`sft.save_every` steps, at the end, and on SIGTERM/SIGUSR1; a restarted run continues from `latest`.
A sample whose ground truth is not a scene graph + answer, or whose prompt + target exceed
`policy.max_seq_length`, is skipped and counted (`sft/skipped_samples`); a run in which no step trained fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_spatial.algorithms.aggregation import LossScale
from nemo_spatial.algorithms.sft_loss import sft_loss
from nemo_spatial.batch import PolicyBatch
from nemo_spatial.checkpoint import (
    TrainerState,
    capture_rng_state,
    load_trainer_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from nemo_spatial.data.sft_target import TargetError, sft_target
from nemo_spatial.fileio import atomic_write_text
from nemo_spatial.generation.types import GenerationRequest
from nemo_spatial.logging_sinks import MetricsLogger
from nemo_spatial.parallel.collectives import TorchCollectives
from nemo_spatial.preemption import PreemptionFlag
from nemo_spatial.refit import refit
from nemo_spatial.reward import RewardSample
from nemo_spatial.sft_config import SFTRunConfig
from nemo_spatial.trainer import PhaseTimer, _take, any_rank, reward_metrics, run_on_driver

logger = logging.getLogger(__name__)
Encode = Callable[[str], list[int]]


@dataclass
class SFTBatch:
    """The policy batch of the usable samples, and how many were left out (and why)."""

    batch: Any  # models.qwen25_vl.PolicyBatch, or None when no sample is usable
    prompts: list[Any]
    skipped: int
    errors: list[str]


def build_sft_batch(
    prompts: Sequence[Any], encode: Encode, eos_id: int, pad_id: int, *, target_format: str, max_length: int,
    multiple: int,
) -> SFTBatch:  # fmt: skip
    """Rows prompt + target + <eos>, right-padded; response_mask = the target tokens (what the loss trains).

    Samples without a usable target, or longer than `max_length`, are left out, then the last few usable ones
    so that the rest is a multiple of `multiple` (the policy's DP ranks x micro-batch size).
    """
    kept: list[tuple[Any, list[int]]] = []
    errors: list[str] = []
    for prompt in prompts:
        try:
            target = [*encode(sft_target(prompt.ground_truth, target_format)), eos_id]
        except TargetError as error:
            errors.append(str(error))
            continue
        if int(prompt.input_ids.numel()) + len(target) > max_length:
            errors.append(f"row {prompt.row}: prompt + target exceed policy.max_seq_length={max_length}")
            continue
        kept.append((prompt, target))
    kept = kept[: len(kept) - len(kept) % multiple]
    if not kept:
        return SFTBatch(None, [], len(prompts), errors)
    lengths = [int(p.input_ids.numel()) + len(t) for p, t in kept]
    rows, width = len(kept), max(lengths)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.bool)
    target_mask = torch.zeros((rows, width), dtype=torch.bool)
    for i, (prompt, target) in enumerate(kept):
        start = int(prompt.input_ids.numel())
        input_ids[i, :start] = prompt.input_ids.long()
        input_ids[i, start : lengths[i]] = torch.tensor(target, dtype=torch.long)
        attention[i, : lengths[i]] = True
        target_mask[i, start : lengths[i]] = True
    pixels = [p.pixel_values for p, _ in kept]
    if any(values is None for values in pixels):
        raise ValueError("SFT prompts need their pixel_values: open the stream with pixels=True (the default)")
    batch = PolicyBatch(
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=target_mask,
        pixel_values=torch.cat([values for values in pixels if values is not None]),
        image_grid_thw=torch.cat([p.image_grid_thw for p, _ in kept]).long(),
    )
    return SFTBatch(batch, [p for p, _ in kept], len(prompts) - rows, errors)


def sft_loss_fn(
    log_probs: torch.Tensor, micro_batch: PolicyBatch, scale: LossScale
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy's loss-function contract around `sft_loss`: the micro-batch's response mask is the target."""
    return sft_loss(log_probs, micro_batch.response_mask, scale)


def own_rows(batch: PolicyBatch, data_shard: tuple[int, int]) -> PolicyBatch:
    """This data-parallel rank's contiguous share of the global batch (the policy trains the rows it is given)."""
    rank, size = data_shard
    per_rank = batch.batch_size // size
    return batch.select(list(range(rank * per_rank, (rank + 1) * per_rank)))


class SFTTrainer:
    """Runs `cfg.sft.total_steps` supervised steps on every rank; `generator`/`reward` live on the driver only."""

    def __init__(
        self, cfg: SFTRunConfig, policy: Any, prompts: Any, val_prompts: Any, encode: Encode, eos_id: int,
        pad_id: int, metrics: MetricsLogger, run_dir: Path, generator: Any = None, reward: Any = None,
        decode: Callable[[list[int]], str] | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.policy, self.prompts, self.val_prompts = cfg, policy, prompts, val_prompts
        self.encode, self.eos_id, self.pad_id = encode, eos_id, pad_id
        self.metrics, self.run_dir = metrics, run_dir
        self.generator, self.reward, self.decode = generator, reward, decode
        self.is_driver = not dist.is_initialized() or dist.get_rank() == 0
        self.validates = cfg.sft.val_every > 0 and val_prompts is not None
        self.rewards = self.validates and cfg.sft.val_reward
        if self.rewards and self.is_driver and (generator is None or reward is None or decode is None):
            raise ValueError("sft.val_reward=true: the driver needs a generator, a reward client and a decoder")
        self.step = self.version = self.trained = 0
        self._val_samples: list[Any] | None = None

    def fit(self) -> None:
        sc = self.cfg.sft
        self._resume()
        flag = PreemptionFlag().install()
        try:
            if sc.val_before_train and self.validates and self.step == 0:
                self.metrics.log(0, self.validate())
            while self.step < sc.total_steps:
                metrics = self.train_step()
                self.step += 1
                if self.validates and self.step % sc.val_every == 0:
                    metrics.update(self.validate())
                self.metrics.log(self.step, metrics)
                stop = any_rank(flag.requested)
                if stop or self.step == sc.total_steps or (sc.save_every and self.step % sc.save_every == 0):
                    self.save()
                if stop:
                    logger.warning("stopped by %s after step %d; checkpoint saved", flag.signal_name, self.step)
                    break
        finally:
            flag.uninstall()
        if self.trained == 0:
            raise RuntimeError("no SFT step trained: every batch was empty (see the skipped-sample warnings)")

    def _batch(self, prompts: Sequence[Any]) -> SFTBatch:
        built = build_sft_batch(
            prompts, self.encode, self.eos_id, self.pad_id, target_format=self.cfg.sft.target,
            max_length=self.cfg.policy.max_seq_length, multiple=self.policy.sample_multiple,
        )  # fmt: skip
        if built.errors:
            logger.warning("step %d: %d sample(s) left out, e.g. %s", self.step + 1, built.skipped, built.errors[0])
        return built

    def train_step(self) -> dict[str, float]:
        timer = PhaseTimer()
        with timer("data"):
            built = self._batch(self.prompts.next_batch(self.cfg.sft.batch_size))
        metrics: dict[str, float] = {"sft/skipped_samples": float(built.skipped)}
        if built.batch is None:
            logger.error("step %d: no usable sample; no update", self.step + 1)
            return metrics
        with timer("update"):
            # Every rank builds the global batch (same stream, same order) and trains its own DP share of it.
            update = self.policy.train_step(own_rows(built.batch, self.policy.data_shard), sft_loss_fn)
        self.trained += 1
        metrics.update({f"sft/{k}": v for k, v in update.items()})
        metrics.update(timer.metrics())
        return metrics

    # ---- validation ------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation loss on every rank (collective), and the validation reward from the driver."""
        if self._val_samples is None:
            self._val_samples = list(_take(self.val_prompts.one_pass(), self.cfg.sft.val_prompts))
        metrics = self._validation_loss(self._val_samples)
        if self.rewards:
            metrics.update(self._sync_weights())
            metrics.update(run_on_driver(lambda: self._validation_reward(self._val_samples or []), self.is_driver))
        return metrics

    def _validation_loss(self, samples: list[Any]) -> dict[str, float]:
        total = tokens = 0.0
        for first in range(0, len(samples), self.cfg.sft.batch_size):
            built = self._batch(samples[first : first + self.cfg.sft.batch_size])
            if built.batch is None:
                continue
            log_probs, _ = self.policy.compute_log_probs(built.batch)
            mask = built.batch.response_mask
            total += float(-(log_probs * mask).sum())
            tokens += float(mask.sum())
        return {"val/sft_loss": total / tokens} if tokens else {}

    def _validation_reward(self, samples: list[Any]) -> dict[str, float]:
        assert self.generator is not None and self.reward is not None and self.decode is not None
        requests = [
            GenerationRequest(
                prompt_id=f"val{self.step}:{i}", prompt_token_ids=list(p.raw_prompt_ids), images=[p.image]
            )
            for i, p in enumerate(samples)
        ]
        rollouts = self.generator.generate(requests, self.cfg.generation.val_sampling)
        n = self.cfg.generation.val_sampling.n
        scored = [
            RewardSample(self.decode(r.token_ids), samples[i // n].ground_truth, samples[i // n].problem)
            for i, r in enumerate(rollouts)
        ]
        result = self.reward.score_batch(scored)
        self._save_samples(scored, result)
        return reward_metrics(result, "val/reward")

    def _save_samples(self, scored: list[RewardSample], result: Any, keep: int = 8) -> None:
        """validation/step_N.jsonl: the first `keep` responses with their ground truth and reward, for a person."""
        lines = [
            json.dumps({"response": s.response, "ground_truth": s.ground_truth, "reward": r.components()})
            for s, r in zip(scored[:keep], result.results[:keep], strict=True)
        ]
        folder = self.run_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"step_{self.step:06d}.jsonl", "\n".join(lines) + "\n")

    def _sync_weights(self) -> dict[str, float]:
        """The GRPO loop's refit (nemo_spatial.refit; a generation server restarted during the push is pushed to
        again). The weights after step N are version N + 1: the generator starts at 0 with policy.hf_path's
        weights, which the policy may not hold (policy.init_checkpoint), so even step 0's validation pushes."""
        self.version = self.step + 1
        return refit(self.policy, self.generator, TorchCollectives(), self.version, self.cfg.generation.max_restarts)

    # ---- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> Path:
        state = TrainerState(
            step=self.step, weight_version=self.version, data_state=self.prompts.state_dict(),
            rng_state=capture_rng_state(),
        )  # fmt: skip
        path = save_checkpoint(
            self.run_dir, state, lambda target: self.policy.save_checkpoint(str(target)),
            keep_last=self.cfg.sft.keep_last, is_writer=self.is_driver,
            barrier=dist.barrier if dist.is_initialized() else (lambda: None),
        )  # fmt: skip
        logger.info("checkpoint %s", path)
        return path

    def _resume(self) -> None:
        checkpoint = resume_checkpoint(self.run_dir, "") if self.cfg.sft.resume else None  # verified (manifest)
        if checkpoint is None:
            return
        state = load_trainer_state(checkpoint)
        self.policy.load_checkpoint(str(checkpoint / "policy"))
        self.prompts.load_state_dict(state.data_state)
        restore_rng_state(state.rng_state)
        self.step, self.version = state.step, state.weight_version
        self.trained = self.step  # the run trained before it was interrupted
        self.metrics.resumed_at(self.step)
        logger.info("resumed from %s at step %d", checkpoint, self.step)
