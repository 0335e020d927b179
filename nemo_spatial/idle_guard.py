"""Fail a run that trains nothing, instead of letting it checkpoint, print `done` and exit 0.

    guard = IdleGuard(cfg.trainer.max_steps_without_update, cfg.trainer.prompts_per_step)
    guard.observe(step, metrics, finished)      # after each step; raises NoTrainingError with the reason

A step trained when the policy took at least one optimizer step (its metrics carry `actor/*`). A step without
one is a step whose every group was dropped (the generation server refused every prompt, e.g. prompts longer
than generation.max_model_len) or left out (too few complete groups to split over DP x micro-batch). The guard
raises after `limit` consecutive such steps, and at the end of a run none of whose steps trained. Every rank
sees the same metrics keys (the kept groups are decided from broadcast rollouts), so all ranks raise at the
same step.
"""

from __future__ import annotations

from collections.abc import Mapping

from nemo_spatial.errors import UserError

UPDATE_PREFIX = "actor/"


class NoTrainingError(UserError):
    """Several consecutive steps (or a whole run) without an optimizer step; the message says why."""


class IdleGuard:
    """Counts consecutive steps without an update; `limit` 0 turns the consecutive-steps check off."""

    def __init__(self, limit: int, prompts_per_step: int) -> None:
        self.limit, self.prompts_per_step = limit, prompts_per_step
        self.idle = 0
        self.trained_any = False

    def observe(self, step: int, metrics: Mapping[str, float], finished: bool = False) -> None:
        if any(key.startswith(UPDATE_PREFIX) for key in metrics):
            self.idle, self.trained_any = 0, True
            return
        self.idle += 1
        if self.limit and self.idle >= self.limit:
            raise NoTrainingError(
                f"{self.idle} consecutive steps (to step {step}) trained nothing: {self.reason(metrics)}"
            )
        if finished and not self.trained_any:
            raise NoTrainingError(f"the run ended at step {step} without training a step: {self.reason(metrics)}")

    def reason(self, metrics: Mapping[str, float]) -> str:
        dropped = int(metrics.get("rollout/dropped_groups", 0))
        unused = int(metrics.get("rollout/unused_groups", 0))
        if dropped:
            return (
                f"the generation server could not run {dropped} of {self.prompts_per_step} prompts at the last step "
                "(their groups were dropped; the warnings above and <run_dir>/generation/ say why, e.g. a prompt "
                "longer than generation.max_model_len allows); fix the prompts or the length settings "
                "(data.max_prompt_length, generation.max_model_len)"
            )
        if unused:
            return (
                f"{unused} complete group(s) were too few to split over the data-parallel ranks x "
                "policy.micro_batch_size; lower policy.micro_batch_size or raise trainer.prompts_per_step"
            )
        return "no group reached the policy update (see the errors above)"
