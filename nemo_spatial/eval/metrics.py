"""Accuracy with a Wilson 95% interval, per benchmark and task, and each benchmark's standard metric.

Per-question accuracy = correct / scored, where scored excludes samples whose generation failed (an API error
after retries, an unusable image): those are counted as `errors`, never scored wrong (upstream scores them
wrong). `unparseable` (no complete answer pair) and `invalid` (an answer of no allowed form) are wrong and
counted apart. The interval is Wilson's score interval (z = 1.96), which stays inside [0, 1] for small n.

Standard metrics (eval-spec section 4 / 7), computed from the same per-sample `correct`:
- cv_bench: lmms-eval's `cv_bench_default_aggregate_results`: 2D = mean(ADE20K acc, COCO acc), 3D = Omni3D acc,
  overall = mean(2D, 3D) over the parts present (so CV-Bench-2D gives the 2D value alone).
- circular (3DSRBench CircularEval / FlipEval): variants of one question share its id before a trailing `-N` or
  `_N`; a question counts when all its variants are correct. Accuracy over questions.
- view_pairs (3DSRBench-Full): rows 2k and 2k+1 (dataset order) are one pair; both correct. Every pair counts
  (upstream loses the last one).
- pairs (MMVP): rows 2k, 2k+1 are one pair; both correct.
- hallusion: aAcc = per question; qAcc = groups (category, subcategory, set_id, question_id) all correct;
  fAcc = groups (category, subcategory, set_id, figure_id) all correct.
- l2_macro (MM-Star, lmms-eval "average"): mean over l2 categories of their accuracy.
- mindcube_setting: accuracy per setting (id prefix: among, around, rotation), overall micro.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Scored:
    """What metrics need of one sample."""

    sample_id: str
    task: str | None
    correct: bool
    status: str  # ok | unparseable | invalid | error
    row: int
    meta: dict[str, Any]


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def summary(samples: list[Scored]) -> dict[str, Any]:
    """n, accuracy, 95% CI, unparseable, invalid, errors over these samples."""
    scored = [s for s in samples if s.status != "error"]
    correct = sum(s.correct for s in scored)
    n = len(scored)
    low, high = wilson(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "ci95": [low, high],
        "unparseable": sum(s.status == "unparseable" for s in scored),
        "invalid": sum(s.status == "invalid" for s in scored),
        "errors": len(samples) - n,
    }


def benchmark_results(metric: str, samples: list[Scored]) -> dict[str, Any]:
    """Overall summary, per-task summaries and the standard metric of one benchmark."""
    by_task: dict[str, list[Scored]] = defaultdict(list)
    for sample in samples:
        if sample.task is not None:
            by_task[sample.task].append(sample)
    result = summary(samples)
    result["tasks"] = {task: summary(group) for task, group in sorted(by_task.items())}
    scored = [s for s in samples if s.status != "error"]
    result["standard_metric"] = STANDARD.get(metric, _none)(scored)
    return result


def _none(samples: list[Scored]) -> dict[str, Any] | None:
    return None


def _accuracy(samples: Iterable[Scored]) -> float | None:
    items = list(samples)
    return sum(s.correct for s in items) / len(items) if items else None


def _groups_all_correct(samples: list[Scored], key: Callable[[Scored], Any]) -> tuple[int, int]:
    groups: dict[Any, bool] = {}
    for sample in samples:
        k = key(sample)
        groups[k] = groups.get(k, True) and sample.correct
    return sum(groups.values()), len(groups)


def _cv_bench(samples: list[Scored]) -> dict[str, Any] | None:
    sources = ("ADE20K", "COCO", "Omni3D")
    by_source = {src: _accuracy(s for s in samples if s.meta.get("source") == src) for src in sources}
    parts = {}
    if by_source["ADE20K"] is not None and by_source["COCO"] is not None:
        parts["2D"] = (by_source["ADE20K"] + by_source["COCO"]) / 2
    if by_source["Omni3D"] is not None:
        parts["3D"] = by_source["Omni3D"]
    if not parts:
        return None
    return {
        "name": "source-weighted accuracy",
        "value": sum(parts.values()) / len(parts),
        **parts,
        "per_source": by_source,
    }


_VARIANT = re.compile(r"^(.*?)[-_]\d+$")


def _circular(samples: list[Scored]) -> dict[str, Any] | None:
    def base(sample: Scored) -> str:
        match = _VARIANT.match(sample.sample_id)
        return match.group(1) if match else sample.sample_id

    good, total = _groups_all_correct(samples, base)
    return {"name": "CircularEval accuracy", "value": good / total, "questions": total} if total else None


def _row_pairs(samples: list[Scored], name: str) -> dict[str, Any] | None:
    good, total = _groups_all_correct(samples, lambda s: s.row // 2)
    return {"name": name, "value": good / total, "pairs": total} if total else None


def _hallusion(samples: list[Scored]) -> dict[str, Any] | None:
    if not samples:
        return None

    def group(*fields: str) -> Callable[[Scored], tuple[Any, ...]]:
        return lambda s: (s.task, *(s.meta.get(f) for f in fields))

    q_good, q_total = _groups_all_correct(samples, group("subcategory", "set_id", "question_id"))
    f_good, f_total = _groups_all_correct(samples, group("subcategory", "set_id", "figure_id"))
    return {
        "name": "aAcc / qAcc / fAcc",
        "value": _accuracy(samples),
        "aAcc": _accuracy(samples),
        "qAcc": q_good / q_total,
        "fAcc": f_good / f_total,
    }


def _l2_macro(samples: list[Scored]) -> dict[str, Any] | None:
    by_l2: dict[str, list[Scored]] = defaultdict(list)
    for sample in samples:
        by_l2[str(sample.meta.get("l2_category"))].append(sample)
    if not by_l2:
        return None
    means = {k: _accuracy(v) or 0.0 for k, v in sorted(by_l2.items())}
    return {"name": "mean of l2-category accuracies", "value": sum(means.values()) / len(means), "l2": means}


def mindcube_setting(sample_id: str) -> str:
    prefix = re.split(r"[_\-\d]", sample_id, maxsplit=1)[0].lower()
    return "around" if prefix.startswith("around") else prefix


def _mindcube(samples: list[Scored]) -> dict[str, Any] | None:
    by_setting: dict[str, list[Scored]] = defaultdict(list)
    for sample in samples:
        by_setting[mindcube_setting(sample.sample_id)].append(sample)
    if not samples:
        return None
    return {
        "name": "accuracy (micro), per setting",
        "value": _accuracy(samples),
        "settings": {k: _accuracy(v) for k, v in sorted(by_setting.items())},
    }


STANDARD: dict[str, Callable[[list[Scored]], dict[str, Any] | None]] = {
    "cv_bench": _cv_bench,
    "circular": _circular,
    "view_pairs": lambda s: _row_pairs(s, "view-consistency (both views correct)"),
    "pairs": lambda s: _row_pairs(s, "pair accuracy"),
    "hallusion": _hallusion,
    "l2_macro": _l2_macro,
    "mindcube_setting": _mindcube,
}
