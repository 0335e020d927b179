"""The GRPO loop: prompts -> rollouts -> rewards -> advantages -> policy updates -> weight sync, every step.

One step, as SpatialThinker's (EasyR1/veRL) trainer runs it:
 1. the next `trainer.prompts_per_step` prompts (every rank reads the same, seeded, resumable stream);
 2. the driver (global rank 0) asks the generator for n samples each, with the step's own sampling seed, and
    refuses rollouts from a stale weight version; groups the generator could not run are dropped whole;
 3. the driver scores them (in-process or the remote reward service) and broadcasts rollouts and rewards;
 4. GRPO advantages per group of n (groups by prompt index, never by text);
 5. the policy's log-probs of the sampled tokens before any update (`old`) and under the initial weights
    (`ref`, for the KL term);
 6. `prompts_per_step / prompts_per_update` optimizer steps (x ppo_epochs), each over whole groups;
 7. the new weights go to the generator (version + 1), so the next rollouts are on-policy;
 8. metrics; validation every `val_every` steps; a checkpoint every `save_every` steps, at the end, and when
    SIGTERM/SIGUSR1 asks for one (then the loop exits cleanly).
Departures from upstream: mini-batches are taken in rollout order (upstream shuffles the rollout batch
first; with one PPO epoch every sample is used once either way). Sampling is not seeded per request
(`generation.sampling.seed` stays as configured): vLLM's CPU build crashes on per-request seeds ("CPU
Generator does not use offset"), so a resumed run continues with the same prompts and weights but fresh
samples.
The loop sees only interfaces: the policy (models.qwen25_vl.MegatronPolicy), a `Generator`, a `RewardClient`,
and the prompt streams; it never touches Megatron or vLLM types.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_spatial.algorithms import actor_loss, compute_advantages, prompt_group_ids, zero_variance_group_fraction
from nemo_spatial.algorithms.loss import metric_reduction
from nemo_spatial.checkpoint import (
    TrainerState,
    capture_rng_state,
    load_trainer_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from nemo_spatial.config import Config
from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.types import GenerationRequest, Generator, Rollout, require_version
from nemo_spatial.idle_guard import IdleGuard
from nemo_spatial.logging_sinks import MetricsLogger
from nemo_spatial.preemption import PreemptionFlag
from nemo_spatial.reward import COMPONENTS, BatchResult, RewardSample
from nemo_spatial.reward.parsing import parse_scene
from nemo_spatial.rollouts import build_policy_batch, keep_complete_groups, trainable_group_count

logger = logging.getLogger(__name__)


class Trainer:
    """Runs `cfg.trainer.total_steps` GRPO steps on every rank; `generator`/`reward` live on the driver only."""

    def __init__(
        self,
        cfg: Config,
        policy: Any,
        prompts: Any,
        generator: Generator | None,
        reward: Any,
        metrics: MetricsLogger,
        run_dir: Path,
        pad_id: int,
        decode: Callable[[list[int]], str] | None = None,
        val_prompts: Any = None,
    ) -> None:
        self.cfg, self.policy, self.prompts, self.val_prompts = cfg, policy, prompts, val_prompts
        self.generator, self.reward, self.metrics = generator, reward, metrics
        self.run_dir, self.pad_id, self.decode = run_dir, pad_id, decode
        self.is_driver = not dist.is_initialized() or dist.get_rank() == 0
        if self.is_driver and (generator is None or reward is None):
            raise ValueError("the driver rank needs a generator and a reward client")
        # Decided from the config, so that every rank takes part in the validation broadcast or none does.
        self.validates = cfg.trainer.val_every > 0 and bool(cfg.data.val_files)
        if self.validates and self.is_driver and val_prompts is None:
            raise ValueError("data.val_files is set, so the driver needs the validation prompt stream")
        self._check_update_split()
        self.step = 0
        self.version = 0

    def _check_update_split(self) -> None:
        """Every optimizer step's samples must split over the policy's DP ranks x micro-batch size."""
        per_update = self.cfg.trainer.prompts_per_update * self.cfg.generation.sampling.n
        multiple = self.policy.sample_multiple
        if per_update % multiple:
            raise ConfigError(
                f"an optimizer step takes trainer.prompts_per_update x generation.sampling.n = {per_update} samples, "
                f"which do not split over this run's data-parallel ranks x policy.micro_batch_size = {multiple}; "
                f"make trainer.prompts_per_update x generation.sampling.n a multiple of {multiple}, or change the "
                "micro-batch size or the parallel layout"
            )

    # ---- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train to `total_steps`, resuming from the latest checkpoint when there is one."""
        tc = self.cfg.trainer
        self._resume()
        idle = IdleGuard(tc.max_steps_without_update, tc.prompts_per_step)  # a run that trains nothing fails
        flag = PreemptionFlag().install()
        try:
            if tc.val_before_train and self.validates:
                self.metrics.log(self.step, self.validate())
            while self.step < tc.total_steps:
                metrics = self.train_step()
                self.step += 1
                if self.validates and self.step % tc.val_every == 0:
                    metrics.update(self.validate())
                self.metrics.log(self.step, metrics)
                finished = self.step == tc.total_steps
                idle.observe(self.step, metrics, finished)
                # Every rank must take the same branch (the save is collective), and a signal may reach the
                # ranks at different moments or only some of them: stop when any rank was asked to.
                stop = any_rank(flag.requested)
                if stop or finished or (tc.save_every and self.step % tc.save_every == 0):
                    self.save()
                if stop:
                    reason = flag.signal_name or "a signal to another rank"
                    logger.warning("stopped by %s after step %d; checkpoint saved", reason, self.step)
                    break
        finally:
            flag.uninstall()

    def train_step(self) -> dict[str, float]:
        """One GRPO step (see the module docstring); returns its metrics."""
        timer = PhaseTimer()
        n = self.cfg.generation.sampling.n
        prompts = self.prompts.next_batch(self.cfg.trainer.prompts_per_step)
        with timer("generate"):
            rollouts = self._on_driver(lambda: self._generate(prompts, self.cfg.generation.sampling))
        require_version([r for r in rollouts if r.ok], self.version)
        groups = keep_complete_groups(rollouts, len(prompts), n)
        kept = groups.kept[: trainable_group_count(len(groups.kept), n, self.policy.sample_multiple)]
        if groups.dropped:
            logger.warning(
                "step %d: %d group(s) failed to generate (%s); %d more left out so that the rest split over the "
                "data-parallel ranks x micro-batch size",
                self.step + 1, groups.dropped, groups.errors[0], len(groups.kept) - len(kept),
            )  # fmt: skip
        prompts = [prompts[p] for p in kept]
        rollouts = [r for p in kept for r in rollouts[p * n : (p + 1) * n]]
        with timer("reward"):
            scores: BatchResult = self._on_driver(lambda: self._score(prompts, rollouts, n))
        metrics = {
            "rollout/dropped_groups": float(groups.dropped),
            "rollout/unused_groups": float(len(groups.kept) - len(kept)),
            **reward_metrics(scores, "reward"),
        }
        metrics.update(response_metrics(rollouts))
        if prompts:
            metrics.update(self._update(prompts, rollouts, scores, n, timer))
        else:
            logger.error("step %d: no complete group to train on (%s); no update", self.step + 1, groups.errors[:1])
        if self.is_driver and self._sample_due():
            self._save_rollout_sample(prompts, rollouts, scores)
        metrics.update(timer.metrics())
        tokens = sum(int(p.input_ids.numel()) for p in prompts) * n + sum(len(r.token_ids) for r in rollouts)
        metrics["throughput/tokens_per_s"] = tokens / max(timer.total, 1e-9)
        return metrics

    def _update(
        self, prompts: list[Any], rollouts: list[Rollout], scores: BatchResult, n: int, timer: PhaseTimer
    ) -> dict[str, float]:
        rewards = torch.tensor(scores.column("overall"), dtype=torch.float64)
        groups = prompt_group_ids(len(prompts), n)
        advantages = compute_advantages(self.cfg.algorithm.advantage_estimator, rewards, groups)
        batch = build_policy_batch(prompts, rollouts, n, advantages, self.pad_id)
        with timer("old_logprobs"):
            batch.old_logprobs, _ = self.policy.compute_logprobs(batch)
        if self.cfg.algorithm.kl_coef > 0:
            with timer("ref_logprobs"):
                batch.ref_logprobs = self.policy.reference_logprobs(batch)
        updates: list[dict[str, float]] = []
        with timer("update"):
            for _ in range(self.cfg.trainer.ppo_epochs):
                for rows in minibatch_rows(len(prompts), n, self.cfg.trainer.prompts_per_update):
                    updates.append(self.policy.train_step(batch.select(rows), self._loss))
        with timer("sync"):
            sync = self._sync_weights()
        metrics = {_prefixed("actor/", name): value for name, value in combine_update_metrics(updates).items()}
        metrics.update(
            {
                "advantage/mean": float(advantages.mean()),
                "advantage/std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
                "advantage/max": float(advantages.max()),
                "advantage/min": float(advantages.min()),
                "advantage/zero_variance_groups": float(zero_variance_group_fraction(rewards, groups)),
                **sync,
            }
        )
        return metrics

    def _loss(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor | None,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        scale: Any,
        rollout_log_probs: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = actor_loss(
            self.cfg.algorithm,
            logprobs,
            old_logprobs,
            advantages,
            response_mask,
            ref_log_probs=ref_logprobs,
            rollout_log_probs=rollout_log_probs,
            scale=scale,
        )
        return out.loss, out.metrics()

    # ---- the driver's side: generation, reward, weight sync ------------------------------------------------
    def _generate(self, prompts: Sequence[Any], sampling: Any) -> list[Rollout]:
        assert self.generator is not None
        requests = [
            GenerationRequest(prompt_id=f"{self.step}:{i}", prompt_token_ids=list(p.raw_prompt_ids), images=[p.image])
            for i, p in enumerate(prompts)
        ]
        return self.generator.generate(requests, sampling)

    def _score(self, prompts: Sequence[Any], rollouts: Sequence[Rollout], n: int) -> BatchResult:
        assert self.decode is not None and self.reward is not None
        samples = [
            RewardSample(self.decode(r.token_ids), prompts[i // n].ground_truth, prompts[i // n].problem)
            for i, r in enumerate(rollouts)
        ]
        return self.reward.score_batch(samples)

    def _sync_weights(self) -> dict[str, float]:
        """Every rank walks the (collective) weight export; the driver streams it to the generator."""
        self.version += 1
        named = self.policy.named_hf_weights()
        if not self.is_driver:
            for _ in named:
                pass
            return {}
        assert self.generator is not None
        stats = self.generator.update_weights(named, self.version)
        return {"sync/seconds": stats.seconds, "sync/gb_per_s": stats.gb_per_s, "sync/bytes": float(stats.num_bytes)}

    def _on_driver(self, work: Callable[[], Any]) -> Any:
        return run_on_driver(work, self.is_driver)

    # ---- validation, samples, checkpoints -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Greedy-ish (temperature 0.5, n=1) rollouts on the validation prompts, scored; driver metrics."""

        def run() -> dict[str, float]:
            prompts = list(_take(self.val_prompts.one_pass(), self.cfg.trainer.val_prompts))
            rollouts = self._generate(prompts, self.cfg.generation.val_sampling)
            scores = self._score(prompts, rollouts, self.cfg.generation.val_sampling.n)
            return reward_metrics(scores, "val/reward")

        return self._on_driver(run)

    def save(self) -> Path:
        state = TrainerState(
            step=self.step,
            weight_version=self.version,
            data_state=self.prompts.state_dict(),
            rng_state=capture_rng_state(),
        )
        barrier = dist.barrier if dist.is_initialized() else (lambda: None)
        path = save_checkpoint(
            self.run_dir,
            state,
            lambda target: self.policy.save_checkpoint(str(target)),
            keep_last=self.cfg.trainer.keep_last,
            is_writer=self.is_driver,
            barrier=barrier,
        )
        logger.info("checkpoint %s", path)
        return path

    def _resume(self) -> None:
        tc = self.cfg.trainer
        checkpoint = resume_checkpoint(self.run_dir, tc.resume_from) if tc.resume else None  # verified
        if checkpoint is None:
            return
        state = load_trainer_state(checkpoint)
        self.policy.load_checkpoint(str(checkpoint / "policy"))
        self.prompts.load_state_dict(state.data_state)
        restore_rng_state(state.rng_state)
        self.step, self.version = state.step, state.weight_version - 1
        self.metrics.resumed_at(self.step)
        self._sync_weights()  # the generator restarts from the HF weights: give it the checkpoint's
        logger.info("resumed from %s at step %d", checkpoint, self.step)

    def _sample_due(self) -> bool:
        every = self.cfg.logging.rollout_sample_every
        return every > 0 and (self.step + 1) % every == 0

    def _save_rollout_sample(self, prompts: list[Any], rollouts: list[Rollout], scores: BatchResult) -> None:
        """The first prompt's group for a person: prompt, image, ground truth (with its scene graph), each response,
        the scene graph parsed from it, and its reward breakdown."""
        if not prompts or self.decode is None:
            return
        n = self.cfg.generation.sampling.n
        folder = self.run_dir / "rollouts" / f"step_{self.step + 1:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        prompts[0].image.save(folder / "image.png")
        record = {
            "prompt": prompts[0].problem,
            "ground_truth": prompts[0].ground_truth,
            "samples": [
                {
                    "response": response,
                    # The <scene> block as the reward read it ({} when missing or not valid JSON).
                    "scene_graph": parse_scene(response),
                    "reward": scores.results[i].components(),
                    "error": scores.results[i].error,
                }
                for i, response in enumerate(self.decode(r.token_ids) for r in rollouts[:n])
            ],
        }
        (folder / "rollouts.json").write_text(json.dumps(record, indent=2) + "\n")


class DriverFailedError(RuntimeError):
    """Raised on the other ranks when the driver's work (generation, reward) failed; the driver raises its own."""


def run_on_driver(work: Callable[[], Any], is_driver: bool) -> Any:
    """Run `work` on the driver and hand its (picklable) result to every rank.

    A failure on the driver (a dead generation server, an unreachable reward service) is broadcast too, so
    every rank stops with it instead of waiting in the collective until its timeout; the last checkpoint
    stays as it was.
    """
    result: Any = None
    failure: BaseException | None = None
    if is_driver:
        try:
            result = work()
        except Exception as error:  # noqa: BLE001 - re-raised below on every rank
            failure = error
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [(result, None if failure is None else f"{type(failure).__name__}: {failure}")]
        dist.broadcast_object_list(box, src=0)
        result, message = box[0]
        if message is not None and failure is None:
            raise DriverFailedError(f"rank 0 failed: {message}")
    if failure is not None:
        raise failure
    return result


def any_rank(value: bool) -> bool:
    """True on every rank when `value` is true on at least one (a collective; plain `value` without one)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return any(values)


class PhaseTimer:
    """Wall time of named phases of a step: `with timer("generate"): ...`; `metrics()` -> timing/*_s."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started

    def metrics(self) -> dict[str, float]:
        return {**{f"timing/{k}_s": v for k, v in self.seconds.items()}, "timing/step_s": self.total}


def minibatch_rows(num_prompts: int, n: int, prompts_per_update: int) -> list[list[int]]:
    """Rows of each optimizer step: whole groups of n, `prompts_per_update` groups at a time, in order."""
    return [
        list(range(first * n, min(first + prompts_per_update, num_prompts) * n))
        for first in range(0, num_prompts, prompts_per_update)
    ]


def reward_metrics(scores: BatchResult, prefix: str) -> dict[str, float]:
    """Per component (overall included): mean and distribution (p10/p50/p90, std, min, max); unscorable count."""
    metrics: dict[str, float] = {f"{prefix}/errors": float(scores.n_errors)}
    if not scores.results:
        return metrics
    for name in COMPONENTS:
        values = torch.tensor(scores.column(name), dtype=torch.float64)
        metrics[f"{prefix}/{name}/mean"] = float(values.mean())
        for q in (0.1, 0.5, 0.9):
            metrics[f"{prefix}/{name}/p{int(q * 100)}"] = float(torch.quantile(values, q))
        metrics[f"{prefix}/{name}/std"] = float(values.std()) if values.numel() > 1 else 0.0
        metrics[f"{prefix}/{name}/max"], metrics[f"{prefix}/{name}/min"] = float(values.max()), float(values.min())
    return metrics


def response_metrics(rollouts: Sequence[Rollout]) -> dict[str, float]:
    if not rollouts:
        return {}
    lengths = torch.tensor([len(r.token_ids) for r in rollouts], dtype=torch.float64)
    truncated = sum(r.finish_reason == "length" for r in rollouts) / len(rollouts)
    return {
        "response/length/mean": float(lengths.mean()),
        "response/length/max": float(lengths.max()),
        "response/length/min": float(lengths.min()),
        "response/truncated_fraction": float(truncated),
    }


def combine_update_metrics(records: Sequence[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from its optimizer updates' (each already global): maxima maxed, the rest averaged."""
    keys = sorted({key for record in records for key in record})
    values = {key: [r[key] for r in records if key in r] for key in keys}
    return {key: max(vals) if metric_reduction(key) == "max" else sum(vals) / len(vals) for key, vals in values.items()}


def _prefixed(prefix: str, name: str) -> str:
    return name if name.startswith(prefix) else prefix + name


def _take(items: Iterator[Any], limit: int) -> Iterator[Any]:
    for count, item in enumerate(items):
        if limit and count >= limit:
            return
        yield item
