"""Scoring a batch of responses: one preset, per-sample results, per-sample errors.

A sample that cannot be scored (a prompt without `Image size`, a malformed ground truth, a non-string
field) gets every component 0 and its error message; the rest of the batch is scored, the errors are
counted in the result and logged once per batch. Scoring never raises for a bad sample.

Each sample has a budget of `time_budget_s` CPU seconds (reward.sample_time_budget_s, default 2; a realistic
sample takes under a millisecond, the worst adversarial one measured ~0.3 s): the spatialthinker scorer checks
it inside its loops, and any preset's sample that used more is scored 0 with a ScoringTimeout error. CPU time
of the scoring thread, not wall time, so a busy machine does not turn slow-but-fair samples into errors.
`upstream_exact` (reward.upstream_exact) gives upstream's spatialthinker value exactly (spatialthinker.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nemo_spatial.reward import r1v, sanity, spatialthinker
from nemo_spatial.reward.similarity import LabelSimilarity, make_similarity
from nemo_spatial.reward.spatialthinker import Components

logger = logging.getLogger(__name__)

COMPONENTS = ("overall", "format", "count", "accuracy", "spatial")
PRESETS = ("spatialthinker", "r1v", "letter_a")
DEFAULT_TIME_BUDGET_S = 2.0


@dataclass(frozen=True)
class RewardSample:
    response: str
    ground_truth: str
    problem: str


@dataclass(frozen=True)
class RewardResult:
    """One sample's reward: every component, and `error` (None when it was scored)."""

    overall: float
    format: float
    count: float
    accuracy: float
    spatial: float
    error: str | None = None

    def components(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COMPONENTS}


@dataclass
class BatchResult:
    results: list[RewardResult]
    n_errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[float]:
        return [getattr(result, name) for result in self.results]


ScoreFn = Callable[[str, str, str, float], Components]  # (response, ground_truth, problem, deadline)


class RewardScorer:
    """A preset bound to its label similarity; call `score_batch` on samples."""

    def __init__(
        self,
        preset: str = "spatialthinker",
        similarity: LabelSimilarity | str = "auto",
        upstream_exact: bool = False,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown reward preset {preset!r}; use one of: {', '.join(PRESETS)}")
        if not time_budget_s > 0:
            raise ValueError(f"time_budget_s={time_budget_s} must be > 0 (reward.sample_time_budget_s)")
        self.preset = preset
        self.similarity = make_similarity(similarity) if isinstance(similarity, str) else similarity
        self.upstream_exact = upstream_exact
        self.time_budget_s = time_budget_s
        self._score = self._bind(preset)
        if preset == "r1v":
            r1v.warm_up()  # not inside the first sample's CPU budget

    def _bind(self, preset: str) -> ScoreFn:
        if preset == "r1v":
            return lambda response, ground_truth, problem, deadline: r1v.score(response, ground_truth, problem)
        if preset == "letter_a":
            return lambda response, ground_truth, problem, deadline: sanity.score(response, ground_truth, problem)
        sim, exact = self.similarity, self.upstream_exact
        return lambda response, ground_truth, problem, deadline: spatialthinker.score(
            response, ground_truth, problem, sim, exact, deadline
        )

    def score_one(self, sample: RewardSample) -> RewardResult:
        start = time.thread_time()
        try:
            _check_fields(sample)
            parts = self._score(sample.response, sample.ground_truth, sample.problem, start + self.time_budget_s)
            spatialthinker.check_deadline(start + self.time_budget_s, "scoring")  # every preset, checked at the end
        except spatialthinker.ScoringTimeout as error:
            used = time.thread_time() - start
            message = f"ScoringTimeout: {error} ({used:.2f} CPU-s, budget {self.time_budget_s:g} s a sample)"
            return RewardResult(0.0, 0.0, 0.0, 0.0, 0.0, error=message)
        except Exception as error:  # noqa: BLE001 - a bad sample must not stop the batch
            return RewardResult(0.0, 0.0, 0.0, 0.0, 0.0, error=f"{type(error).__name__}: {error}")
        # Field by field: dataclasses.asdict deep-copies recursively and cost 13% of a spatialthinker score.
        return RewardResult(parts.overall, parts.format, parts.count, parts.accuracy, parts.spatial)

    def score_batch(self, samples: Iterable[RewardSample]) -> BatchResult:
        batch = BatchResult([self.score_one(sample) for sample in samples])
        errors = [(i, r.error) for i, r in enumerate(batch.results) if r.error is not None]
        batch.n_errors = len(errors)
        batch.first_errors = [f"sample {i}: {message}" for i, message in errors[:5]]
        if errors:
            logger.warning(
                "%d of %d samples could not be scored (reward 0); first: %s",
                len(errors),
                len(batch.results),
                "; ".join(batch.first_errors),
            )
        return batch


def _check_fields(sample: RewardSample) -> None:
    for name in ("response", "ground_truth", "problem"):
        value = getattr(sample, name)
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
