"""The GRPO loop: prompts -> rollouts -> rewards -> advantages -> policy updates, with the weights refit to the
generator at every step boundary.

One step, as SpatialThinker's (EasyR1/veRL) trainer runs it:
 1. the driver reads the next `trainer.prompts_per_step` prompts (the seeded, resumable stream): each image
    decoded and resized, the prompt tokenized with its image pads expanded; no pixel_values (what the generator
    and the reward need only);
 2. refit: when the generator does not hold the policy's current weight version (after an update, after a
    resume, after a restarted generation server), every rank walks the policy's (collective) weight export and
    the driver streams it to the generator;
 3. the driver (global rank 0) asks the generator for n samples each and refuses rollouts from a stale weight
    version; a generator restarted mid-request is refit and asked again; groups the generator could not run
    are dropped whole; colocated (generation.placement=colocated), points 2-3 are bracketed: every rank offloads
    the policy's optimizer state and grads (policy.offload_during_generation; the weights stay) before the
    engines wake, and reloads them once the engines sleep again, before the batch's forward passes;
 4. the driver scores them (in-process or the remote reward service) and broadcasts rollouts and rewards;
 5. GRPO advantages per group of n (groups by prompt index, never by text);
 6. the driver hands each rank the prompts of its data-parallel rows only (rollouts.rank_rows; uint8 images
    and token ids), each rank prepares their pixel_values (`prepare_pixels`: the image processor, once per
    prompt of its rows) and builds the batch of those rows, each prompt's image held once; the policy's log-probs of
    the sampled tokens before any update (`old`) and under the initial weights (`ref`, for the KL term);
 7. `prompts_per_step / prompts_per_update` optimizer steps (x ppo_epochs), each over whole groups;
 8. metrics; validation every `val_every` steps; a checkpoint every `save_every` steps, at the end, and when
    SIGTERM/SIGUSR1 asks for one (then the loop exits cleanly).
Step counters: `step` counts finished GRPO steps (the metrics' x axis, checkpoint names, the data position);
`version` counts the policy's weight updates (+1 after a step that ran its optimizer steps), the version the
generator must hold and that every rollout carries; they differ only after steps that trained nothing (no
complete group). The policy's own `step` counts optimizer steps (several per GRPO step; a step skipped for a
non-finite gradient does not count); it drives the LR schedule and lives in the policy checkpoint.
Departures from upstream: mini-batches are taken in rollout order (upstream shuffles the rollout batch
first; with one PPO epoch every sample is used once either way, with several each epoch takes them in
the same order). Sampling is not seeded per request
(`generation.sampling.seed` stays as configured): vLLM's CPU build crashes on per-request seeds ("CPU
Generator does not use offset"), so a resumed run continues with the same prompts and weights but fresh
samples.
Overlapped GRPO (`trainer.async_rollouts: k` > 0, off by default): points 1-3 take the batch that was drawn and
generated in the background while the previous step trained (weights at most k versions old, the lag logged),
refit between requests; nemo_spatial.async_rollouts states its choices. With k = 0 the loop is the one above.
The loop sees only the interfaces of nemo_spatial.contracts (Policy, Generator, RewardClient, PromptSource,
Collectives) and the neutral batch (nemo_spatial.batch); it never touches Megatron, vLLM or a reward's internals.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from nemo_spatial.algorithms import actor_loss, compute_advantages, prompt_group_ids, zero_variance_group_fraction
from nemo_spatial.algorithms.aggregation import LossScale
from nemo_spatial.async_rollouts import PrefetchedBatch, RolloutQueue, lag_metrics
from nemo_spatial.batch import PolicyBatch
from nemo_spatial.checkpoint import (
    TrainerState,
    capture_rng_state,
    load_trainer_state,
    restore_rng_state,
    resume_checkpoint,
    save_checkpoint,
)
from nemo_spatial.config import Config
from nemo_spatial.contracts import Policy, Prompt, PromptSource, RewardClient, StreamState
from nemo_spatial.errors import ConfigError
from nemo_spatial.fileio import atomic_write_text
from nemo_spatial.generation.config import SamplingConfig
from nemo_spatial.generation.types import (
    GenerationRequest,
    Generator,
    GeneratorRestartedError,
    Rollout,
    require_version,
)
from nemo_spatial.idle_guard import IdleGuard
from nemo_spatial.logging_sinks import MetricsLogger
from nemo_spatial.parallel.collectives import (
    Collectives,
    DriverFailedError,
    Reduction,
    TorchCollectives,
    any_rank,
    reduction_of,
    run_on_driver,
)
from nemo_spatial.parallel.device_memory import release_cached_device_memory
from nemo_spatial.preemption import PreemptionFlag
from nemo_spatial.refit import refit
from nemo_spatial.reward import BatchResult, RewardSample
from nemo_spatial.rollouts import (
    build_policy_batch,
    keep_complete_groups,
    minibatch_rows,
    rank_rows,
    trainable_group_count,
)
from nemo_spatial.upstream import upstream_loss_weights

__all__ = ["DriverFailedError", "PhaseTimer", "Trainer", "any_rank", "minibatch_rows", "run_on_driver"]

logger = logging.getLogger(__name__)


class Trainer:
    """Runs `cfg.trainer.total_steps` GRPO steps on every rank; `generator`/`reward` live on the driver only."""

    def __init__(
        self,
        cfg: Config,
        policy: Policy,
        prompts: PromptSource | None,
        generator: Generator | None,
        reward: RewardClient | None,
        metrics: MetricsLogger,
        run_dir: Path,
        pad_id: int,
        decode: Callable[[list[int]], str] | None = None,
        val_prompts: PromptSource | None = None,
        collectives: Collectives | None = None,
        prepare_pixels: Callable[[dict[int, Prompt]], dict[int, Prompt]] | None = None,
    ) -> None:
        """`prepare_pixels` (every rank): the prompts of this rank's rows with their pixel_values made (the stream
        gives none: data.PixelPreparer); None when the stream's prompts already hold them."""
        self.cfg, self.policy, self.prompts, self.val_prompts = cfg, policy, prompts, val_prompts
        self.generator, self.reward, self.metrics = generator, reward, metrics
        self.run_dir, self.pad_id, self.decode = run_dir, pad_id, decode
        self.collectives: Collectives = collectives or TorchCollectives()
        self.prepare_pixels = prepare_pixels
        self.is_driver = self.collectives.is_driver
        if self.is_driver and (prompts is None or generator is None or reward is None or decode is None):
            raise ValueError("the driver rank needs the prompt stream, a generator, a reward client and decode")
        # Decided from the config, so that every rank takes part in the validation broadcast or none does.
        self.validates = cfg.trainer.val_every > 0 and bool(cfg.data.val_files)
        if self.validates and self.is_driver and val_prompts is None:
            raise ValueError("data.val_files is set, so the driver needs the validation prompt stream")
        self._check_update_split()
        self.shards = self.collectives.all_gather(policy.data_shard)  # every rank's (DP rank, DP size)
        self.step = 0  # finished GRPO steps
        self.version = 0  # weight updates of the policy (what the generator must hold); see the module docstring
        self._queue: RolloutQueue | None = None  # trainer.async_rollouts > 0: the prefetched batches (fit only)
        self._consumed_data: StreamState | None = None  # async: the stream position of the last trained batch

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
        if self.step == 0 and self.cfg.policy.init_checkpoint:
            # The policy holds policy.init_checkpoint's weights, the generator policy.hf_path's (version 0): one
            # weight version apart, so the first step's refit pushes them.
            self.version = max(self.version, 1)
        idle = IdleGuard(tc.max_steps_without_update, tc.prompts_per_step)  # a run that trains nothing fails
        flag = PreemptionFlag().install()
        if tc.async_rollouts:
            # placement=apart: release_memory sleeps nothing; it hands over the request's per-server metrics.
            self._queue = RolloutQueue(self._generate_unless_restarted_at, self.is_driver, self._release_generator)
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
                stop = self.collectives.any_rank(flag.requested)
                if stop or finished or (tc.save_every and self.step % tc.save_every == 0):
                    checkpoint = self.save()
                    if tc.export_hf_every and self.step % tc.export_hf_every == 0 and not stop:
                        self.policy.export_hf(str(checkpoint))  # <run>/hf/step_N, through the policy (no models/)
                if stop:
                    reason = flag.signal_name or "a signal to another rank"
                    logger.warning("stopped by %s after step %d; checkpoint saved", reason, self.step)
                    break
        finally:
            flag.uninstall()
            if self._queue is not None:  # rollouts in flight are discarded (never trained, never checkpointed)
                self._queue.close()
                self._queue = None

    def train_step(self) -> dict[str, float]:
        """One GRPO step (see the module docstring); returns its metrics."""
        timer = PhaseTimer()
        n = self.cfg.generation.sampling.n
        if self._queue is not None:
            # Async (placement apart, so no engine sleeps): the prefetched rollouts of this step.
            metrics: dict[str, float] = {}
            prompts, rollouts = self._prefetched_rollouts(self._queue, timer, metrics)
        else:
            prompts = list(self.prompts.next_batch(self.cfg.trainer.prompts_per_step)) if self.prompts else []
            metrics = self._wake_generator()
            with timer("sync"):
                metrics.update(self.refit())
            with timer("generate"):
                rollouts = self._rollouts(prompts, self.cfg.generation.sampling)
            metrics.update(self._sleep_generator())
            require_version([r for r in rollouts if r.ok], self.version)
        groups = keep_complete_groups(rollouts, len(rollouts) // n, n)
        kept = groups.kept[: trainable_group_count(len(groups.kept), n, self.policy.sample_multiple)]
        if groups.dropped:
            logger.warning(
                "step %d: %d group(s) failed to generate (%s); %d more left out so that the rest split over the "
                "data-parallel ranks x micro-batch size",
                self.step + 1, groups.dropped, groups.errors[0], len(groups.kept) - len(kept),
            )  # fmt: skip
        prompts = [prompts[p] for p in kept] if self.is_driver else []
        rollouts = [r for p in kept for r in rollouts[p * n : (p + 1) * n]]
        with timer("reward"):
            scores = self.collectives.run_on_driver(lambda: self._score(prompts, rollouts, n))
        metrics.update(
            {
                "rollout/dropped_groups": float(groups.dropped),
                "rollout/unused_groups": float(len(groups.kept) - len(kept)),
                **reward_metrics(scores, "reward"),
                **response_metrics(rollouts),
                **(self.prompts.metrics() if self.prompts else {}),
            }
        )
        if kept:
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
        self, prompts: list[Prompt], rollouts: list[Rollout], scores: BatchResult, n: int, timer: PhaseTimer
    ) -> dict[str, float]:
        """`prompts`: the kept prompts on the driver ([] elsewhere); rollouts and scores: every rank's."""
        rewards = torch.tensor(scores.column("overall"), dtype=torch.float64)
        num_prompts = len(rollouts) // n
        groups = prompt_group_ids(num_prompts, n)
        advantages = compute_advantages(self.cfg.algorithm.advantage_estimator, rewards, groups)
        # This rank's rows of each optimizer step; the batch holds those only, steps are contiguous slices of it.
        minibatches = minibatch_rows(num_prompts, n, self.cfg.trainer.prompts_per_update)
        shares = rank_rows(minibatches, *self.policy.data_shard)
        rows = [i for share in shares for i in share]
        with timer("scatter_prompts"):
            own = self.collectives.scatter_from_driver(self._prompts_of_ranks(prompts, minibatches, n))
        if self.prepare_pixels is not None:
            with timer("prepare_pixels"):
                own = self.prepare_pixels(own)
        batch = build_policy_batch(own, rollouts, n, advantages, self.pad_id, rows)
        weights = upstream_loss_weights([len(r.token_ids) for r in rollouts], minibatches, self.cfg)
        if weights is not None:  # upstream-microbatch-mean: each row's weight from its whole optimizer step
            batch.loss_weights = weights[rows]
        with timer("old_log_probs"):
            batch.old_log_probs, _ = self.policy.compute_log_probs(batch)
        if self.cfg.algorithm.kl_coef > 0:
            with timer("ref_log_probs"):
                batch.ref_log_probs = self.policy.reference_log_probs(batch)
        bounds = torch.cumsum(torch.tensor([0] + [len(rows) for rows in shares]), 0).tolist()
        updates: list[dict[str, float]] = []
        with timer("update"):
            for _ in range(self.cfg.trainer.ppo_epochs):
                for first, last in itertools.pairwise(bounds):
                    updates.append(self.policy.train_step(batch.select(list(range(first, last))), self._loss))
        self.version += 1  # the policy's weights changed: the next step's refit pushes them
        metrics = {_prefixed("actor/", name): value for name, value in combine_update_metrics(updates).items()}
        metrics.update(
            {
                "advantage/mean": float(advantages.mean()),
                "advantage/std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
                "advantage/max": float(advantages.max()),
                "advantage/min": float(advantages.min()),
                "advantage/zero_variance_groups": float(zero_variance_group_fraction(rewards, groups)),
            }
        )
        return metrics

    def _prompts_of_ranks(
        self, prompts: list[Prompt], minibatches: list[list[int]], n: int
    ) -> Callable[[int], dict[int, Prompt]] | None:
        """On the driver: for global rank r, the prompts its DP rows use (by prompt index); None elsewhere."""
        if not self.is_driver:
            return None

        def make(rank: int) -> dict[int, Prompt]:
            rows = [i for share in rank_rows(minibatches, *self.shards[rank]) for i in share]
            return {p: prompts[p] for p in dict.fromkeys(i // n for i in rows)}

        return make

    def _loss(
        self, log_probs: torch.Tensor, batch: PolicyBatch, scale: LossScale
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.old_log_probs is None or batch.advantages is None:
            raise ValueError("the GRPO loss needs the batch's old_log_probs and advantages")
        out = actor_loss(
            self.cfg.algorithm,
            log_probs,
            batch.old_log_probs,
            batch.advantages,
            batch.response_mask,
            ref_log_probs=batch.ref_log_probs,
            rollout_log_probs=batch.rollout_log_probs,
            scale=scale,
            row_weights=batch.loss_weights,
        )
        return out.loss, out.metrics()

    # ---- the driver's side: generation, reward; weight sync on every rank ---------------------------------
    def _rollouts(self, prompts: Sequence[Prompt], sampling: SamplingConfig) -> list[Rollout]:
        """The driver's rollouts on every rank; a generator restarted on the way is refit, then asked again."""
        for _ in range(2):
            rollouts = self.collectives.run_on_driver(lambda: self._generate_unless_restarted(prompts, sampling))
            if rollouts is not None:
                return rollouts
            self.refit()
        raise DriverFailedError("the generation server was restarted twice within one request")

    def _generate_unless_restarted(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, step: int | None = None
    ) -> list[Rollout] | None:
        """`step`: the 0-based step the prompts are for (async: ahead of `self.step`); default the current one."""
        assert self.generator is not None
        step = self.step if step is None else step
        requests = [
            GenerationRequest(prompt_id=f"{step}:{i}", prompt_token_ids=list(p.raw_prompt_ids), images=[p.image])
            for i, p in enumerate(prompts)
        ]
        try:
            return self.generator.generate(requests, sampling)
        except GeneratorRestartedError as error:
            logger.error("step %d: %s", step + 1, error)
            return None

    def _generate_unless_restarted_at(self, step: int, prompts: Sequence[Prompt]) -> list[Rollout] | None:
        """The async queue's generate (on its background thread): one step's training rollouts."""
        return self._generate_unless_restarted(prompts, self.cfg.generation.sampling, step)

    def _prefetched_rollouts(
        self, queue: RolloutQueue, timer: PhaseTimer, metrics: dict[str, float]
    ) -> tuple[list[Prompt], list[Rollout]]:
        """Async (nemo_spatial.async_rollouts): wait for the request in flight, refit, take this step's batch
        (generating it first when nothing is queued: the first step, or the first after a resume), then queue
        the next batches so that they generate while this step trains. Every rank calls this."""
        tc = self.cfg.trainer
        with timer("generate"):
            queue.wait_idle()  # the refit below must not race a request in flight
        with timer("sync"):
            metrics.update(self.refit())
        if not queue:
            self._prefetch(queue, self.step)
        for _ in range(2):
            queue.resubmit_failed()  # after a restart: the failed batches again, on the refit weights
            with timer("generate"):
                rollouts = self.collectives.run_on_driver(queue.head().result)
            if rollouts is not None:
                break
            queue.wait_idle()
            metrics.update(self.refit())
        else:
            raise DriverFailedError("the generation server was restarted twice within one request")
        batch = queue.pop()
        self._consumed_data = batch.data_state  # what a checkpoint after this step saves as the data position
        while len(queue) < tc.async_rollouts and self.step + 1 + len(queue) < tc.total_steps:
            self._prefetch(queue, self.step + 1 + len(queue))
        metrics.update(lag_metrics(rollouts, self.version, tc.async_rollouts))
        metrics["timing/generate_background_s"] = batch.seconds  # the request's own time, mostly overlapped
        metrics.update(self.collectives.run_on_driver(lambda: batch.metrics))  # generation/* of the router
        return batch.prompts, rollouts

    def _prefetch(self, queue: RolloutQueue, step: int) -> None:
        """Draw the prompts of (0-based) `step` on the driver and queue their generation."""
        prompts = list(self.prompts.next_batch(self.cfg.trainer.prompts_per_step)) if self.prompts else []
        queue.submit(PrefetchedBatch(step, prompts, self.prompts.state_dict() if self.prompts else {}))

    def _score(self, prompts: Sequence[Prompt], rollouts: Sequence[Rollout], n: int) -> BatchResult:
        assert self.decode is not None and self.reward is not None
        samples = [
            RewardSample(self.decode(r.token_ids), prompts[i // n].ground_truth, prompts[i // n].problem)
            for i, r in enumerate(rollouts)
        ]
        return self.reward.score_batch(samples)

    def refit(self) -> dict[str, float]:
        """Give the generator the policy's current weights unless it holds them (every rank calls this; the push,
        a restarted generator's included, is nemo_spatial.refit's)."""
        return refit(self.policy, self.generator, self.collectives, self.version, self.cfg.generation.max_restarts)

    def _wake_generator(self) -> dict[str, float]:
        """Every rank, before the refit: colocated engines wake. First each rank offloads the policy's optimizer
        state and grads (policy.offload_during_generation) and hands its cached GPU blocks back, and all ranks
        have done so (a barrier) before the driver wakes the engines, so that vLLM finds the memory on every GPU.
        The weights stay on the device: the refit reads them."""
        metrics: dict[str, float] = {}
        if self.cfg.generation.placement == "colocated":
            if self.cfg.offloads_during_generation:
                metrics.update(self.policy.offload_to_host())
            release_cached_device_memory()
            self.collectives.barrier()
        metrics.update(self.collectives.run_on_driver(self._prepare_generator))
        return metrics

    def _sleep_generator(self) -> dict[str, float]:
        """Every rank, after generating: colocated engines sleep (the driver's call returns once they have, and
        the other ranks wait for its result), then the policy's optimizer state and grads come back."""
        metrics = self.collectives.run_on_driver(self._release_generator)
        if self.cfg.offloads_during_generation:
            metrics.update(self.policy.reload_to_device())
        return metrics

    def _prepare_generator(self) -> dict[str, float]:
        """Before the refit: colocated engines wake (weights and KV cache back); see Generator."""
        assert self.generator is not None
        return self.generator.prepare_for_generation()

    def _release_generator(self) -> dict[str, float]:
        """After generating: colocated engines sleep; the generator's phase metrics (servers' busy time, tail)."""
        assert self.generator is not None
        return self.generator.release_memory()

    # ---- validation, samples, checkpoints -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Greedy-ish (temperature 0.5, n=1) rollouts on the validation prompts, scored; driver metrics.

        The generator gets the policy's current weights first (every rank calls this): the refit otherwise
        happens at the start of the next step, and validation would score the weights before the last update.
        """
        sampling = self.cfg.generation.val_sampling
        if self._queue is not None:
            self._queue.wait_idle()  # async: no request in flight during the refit
        self._wake_generator()
        sync = self.refit()

        def prompts() -> list[Prompt]:
            assert self.val_prompts is not None
            return list(_take(self.val_prompts.one_pass(), self.cfg.trainer.val_prompts))

        chosen: list[Prompt] = prompts() if self.is_driver else []
        rollouts = self._rollouts(chosen, sampling)
        self._sleep_generator()
        scores = self.collectives.run_on_driver(
            lambda: reward_metrics(self._score(chosen, rollouts, sampling.n), "val/reward")
        )
        return {**sync, **scores}

    def save(self) -> Path:
        state = TrainerState(
            step=self.step,
            weight_version=self.version,
            # Written by the driver only; async: the position of the last trained batch, not of the prefetched.
            data_state=self._consumed_data if self._consumed_data is not None else self._stream_state(),
            rng_state=capture_rng_state(),
        )
        path = save_checkpoint(
            self.run_dir,
            state,
            lambda target: self.policy.save_checkpoint(str(target)),
            keep_last=self.cfg.trainer.keep_last,
            is_writer=self.is_driver,
            barrier=self.collectives.barrier,
        )
        logger.info("checkpoint %s", path)
        return path

    def _stream_state(self) -> StreamState:
        return self.prompts.state_dict() if self.prompts else {}

    def _resume(self) -> None:
        tc = self.cfg.trainer
        checkpoint = resume_checkpoint(self.run_dir, tc.resume_from) if tc.resume else None  # verified
        if checkpoint is None:
            return
        state = load_trainer_state(checkpoint)
        self.policy.load_checkpoint(str(checkpoint / "policy"))
        if self.prompts is not None:  # the driver's stream; the other ranks read no prompts
            self.prompts.load_state_dict(state.data_state)
        restore_rng_state(state.rng_state)
        # The generator starts from the HF weights (version 0): the first step's refit gives it the checkpoint's.
        self.step, self.version = state.step, state.weight_version
        self.metrics.resumed_at(self.step)
        logger.info("resumed from %s at step %d", checkpoint, self.step)

    def _sample_due(self) -> bool:
        every = self.cfg.logging.rollout_sample_every
        return every > 0 and (self.step + 1) % every == 0

    def _save_rollout_sample(self, prompts: list[Prompt], rollouts: list[Rollout], scores: BatchResult) -> None:
        """The first prompt's group for a person: prompt, image, ground truth, each response, what the reward read
        from it (reward.sample_fields: the scene graph for SpatialThinker), and its reward breakdown."""
        if not prompts or self.decode is None or self.reward is None:
            return
        n = self.cfg.generation.sampling.n
        folder = self.run_dir / "rollouts" / f"step_{self.step + 1:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        prompts[0].image.save(folder / "image.png")
        samples = []
        for i, response in enumerate(self.decode(r.token_ids) for r in rollouts[:n]):
            fields = self.reward.sample_fields(response)
            samples.append(
                {
                    "response": response,
                    **fields,
                    "reward": scores.results[i].components(),
                    "error": scores.results[i].error,
                }
            )
        record = {"prompt": prompts[0].problem, "ground_truth": prompts[0].ground_truth, "samples": samples}
        atomic_write_text(folder / "rollouts.json", json.dumps(record, indent=2) + "\n")


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


def reward_metrics(scores: BatchResult, prefix: str) -> dict[str, float]:
    """Per component (overall included): mean and distribution (p10/p50/p90, std, min, max); unscorable count."""
    metrics: dict[str, float] = {f"{prefix}/errors": float(scores.n_errors)}
    if not scores.results:
        return metrics
    for name in scores.results[0].components():
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


def combine_update_metrics(records: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One step's metrics from its optimizer updates' (each already global): a metric declared MAX is maxed, every
    other one averaged over the updates (a loss of the step is the mean of its updates' global losses)."""
    keys = sorted({key for record in records for key in record})
    values = {key: [r[key] for r in records if key in r] for key in keys}
    return {
        key: max(vals) if reduction_of(vals[0]) is Reduction.MAX else sum(vals) / len(vals)
        for key, vals in values.items()
    }


def _prefixed(prefix: str, name: str) -> str:
    return name if name.startswith(prefix) else prefix + name


def _take(items: Iterator[Prompt], limit: int) -> Iterator[Prompt]:
    for count, item in enumerate(items):
        if limit and count >= limit:
            return
        yield item
