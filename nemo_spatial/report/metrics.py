"""Reading a run's metrics.jsonl (what logging_sinks.MetricsLogger writes) into per-key series.

A line that is not a whole JSON record (a crash can cut the last one short) is skipped and counted, never
fatal: the report of a crashed run is the one people need most. A step logged twice (a resumed run before
`MetricsLogger.resumed_at` existed) keeps its last record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class MetricSeries:
    """Step-indexed records of one run: `series(key)` gives the steps that logged `key` and the values."""

    records: list[dict[str, float]] = field(default_factory=list)
    bad_lines: int = 0

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.records]

    def names(self) -> list[str]:
        """Every metric name logged, in first-seen order."""
        seen: dict[str, None] = {}
        for record in self.records:
            seen.update(dict.fromkeys(record))
        seen.pop("step", None)
        return list(seen)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = [(int(r["step"]), float(r[key])) for r in self.records if key in r]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def first_last(self, key: str) -> tuple[float, float] | None:
        _, values = self.series(key)
        return (values[0], values[-1]) if values else None


def read_metrics(path: Path) -> MetricSeries:
    """All records of `path` in step order (an absent file gives an empty series)."""
    by_step: dict[int, dict[str, float]] = {}
    bad = 0
    if not path.exists():
        return MetricSeries()
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
            values = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        except (ValueError, KeyError, TypeError):
            bad += 1
            logger.warning("%s line %d is not a metrics record; skipped", path, number)
            continue
        by_step[step] = values
    return MetricSeries([by_step[s] for s in sorted(by_step)], bad)
