"""Outputs of a run: samples.jsonl, results.json, report.md and report.png.

- samples.jsonl: one line per sample, in benchmark then dataset order: benchmark, sample_id, task, prompt,
  choices, answer (the gold as stored), response, extracted, correct, latency (seconds), then status (ok |
  unparseable | invalid | error), error, scoring (the mode of extracted/correct), row, meta, and `strict` /
  `upstream` (each mode's extracted, correct, status). It is a valid `--backend replay` input.
- results.json: per benchmark (and per task): n, correct, accuracy, ci95 (Wilson), unparseable, invalid,
  errors, standard_metric, under the run's scoring; `alternative` holds the same under the other mode. Both
  modes are always computed (scoring is cheap), so the report sets them side by side.
- report.md: one row per benchmark: accuracy with CI, unparseable, the standard metric, the other scoring's
  accuracy, and the paper's numbers for the same base model when known (paper.py).
- report.png: accuracy with its CI per benchmark, the paper's values marked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemo_spatial.eval.benchmarks import BENCHMARKS, get_benchmark
from nemo_spatial.eval.metrics import Scored, benchmark_results
from nemo_spatial.eval.paper import PAPER, paper_rows
from nemo_spatial.eval.scoring import Score, strict_score, upstream_score
from nemo_spatial.fileio import atomic_write, atomic_write_text

ERROR = "error"


def score_record(record: dict[str, Any], upstream: bool) -> dict[str, Any]:
    """The samples.jsonl line of one generation record, scored both ways."""
    bench = get_benchmark(str(record["benchmark"]))
    choices = record.get("choices")
    gold = str(record.get("answer") if record.get("answer") is not None else "")
    if record.get("error"):
        modes = {"strict": Score(None, False, ERROR), "upstream": Score(None, False, ERROR)}
    else:
        modes = {
            "strict": strict_score(record.get("response"), gold, bench.gold_form, choices),
            "upstream": upstream_score(bench.key, record.get("response"), gold, choices),
        }
    primary = modes["upstream" if upstream else "strict"]
    line = {
        "benchmark": bench.key,
        "sample_id": record["sample_id"],
        "task": record.get("task"),
        "prompt": record.get("prompt"),
        "choices": choices,
        "answer": record.get("answer"),
        "response": record.get("response"),
        "extracted": primary.extracted,
        "correct": primary.correct,
        "latency": record.get("latency"),
        "status": primary.status,
        "error": record.get("error"),
        "scoring": "upstream" if upstream else "strict",
    }
    extra = {k: v for k, v in record.items() if k not in line and k not in ("strict", "upstream")}
    line.update(extra)
    for name, result in modes.items():
        line[name] = {"extracted": result.extracted, "correct": result.correct, "status": result.status}
    return line


def _scored(lines: list[dict[str, Any]], mode: str) -> list[Scored]:
    return [
        Scored(
            str(x["sample_id"]),
            x.get("task"),
            bool(x[mode]["correct"]),
            x[mode]["status"],
            int(x.get("row", i)),
            x.get("meta") or {},
        )
        for i, x in enumerate(lines)
    ]


def results_of(lines: list[dict[str, Any]], upstream: bool) -> dict[str, Any]:
    mode, other = ("upstream", "strict") if upstream else ("strict", "upstream")
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_bench.setdefault(line["benchmark"], []).append(line)
    benchmarks = {}
    for key, group in by_bench.items():
        metric = BENCHMARKS[key].metric
        result = benchmark_results(metric, _scored(group, mode))
        result["scoring"] = mode
        result["alternative"] = {"scoring": other, **benchmark_results(metric, _scored(group, other))}
        benchmarks[key] = result
    return {"scoring": mode, "benchmarks": benchmarks}


def write_outputs(
    out: Path, records: list[dict[str, Any]], upstream: bool, model: str, paper_models: list[str] | None = None
) -> dict[str, Any]:
    lines = [score_record(r, upstream) for r in records]
    with atomic_write(out / "samples.jsonl") as handle:
        for line in lines:
            handle.write(json.dumps(line, default=str) + "\n")
    results = results_of(lines, upstream)
    results["model"] = model
    results["paper_models"] = paper_rows(model, paper_models)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(results))
    plot(results, out / "report.png")
    return results


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    mode = results["scoring"]
    other = "strict" if mode == "upstream" else "upstream"
    papers = results["paper_models"]
    head = [
        "benchmark",
        "n",
        f"accuracy % ({mode})",
        "95% CI",
        "unparseable",
        "invalid",
        "errors",
        "standard metric",
        f"accuracy % ({other})",
        *(f"paper: {p}" for p in papers),
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, r in results["benchmarks"].items():
        column = BENCHMARKS[key].paper_column
        metric = r.get("standard_metric")
        metric_text = f"{metric['name']}: {_pct(metric['value'])}" if metric else "-"
        cells = [
            key,
            str(r["n"]),
            _pct(r["accuracy"]),
            f"{_pct(r['ci95'][0])}-{_pct(r['ci95'][1])}",
            str(r["unparseable"]),
            str(r["invalid"]),
            str(r["errors"]),
            metric_text,
            _pct(r["alternative"]["accuracy"]),
        ]
        cells += [f"{PAPER[p][column]:.1f}" if column and column in PAPER[p] else "-" for p in papers]
        rows.append("| " + " | ".join(cells) + " |")
        for task, t in r["tasks"].items():
            rows.append(
                f"| &nbsp;&nbsp;{task} | {t['n']} | {_pct(t['accuracy'])} | {_pct(t['ci95'][0])}-"
                f"{_pct(t['ci95'][1])} | {t['unparseable']} | {t['invalid']} | {t['errors']} | | "
                f"{_pct(r['alternative']['tasks'].get(task, {}).get('accuracy'))} |" + " |" * len(papers)
            )
    notes = [
        f"# Evaluation of {results['model']}",
        "",
        f"Scoring: **{mode}** (the other mode's accuracy beside it). Accuracy excludes `errors` (failed "
        "generations); `unparseable` = no complete `<answer>` pair; `invalid` = an answer of no allowed form.",
        "Paper numbers: arXiv 2511.07403 v2 (greedy, zero-shot); the paper's prompt and scoring for MM-Star, V*, "
        "MME-RealWorld-Lite and MindCube are unknown, so compare those with care.",
        "",
    ]
    return "\n".join(notes + rows) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, r in results["benchmarks"].items() if r["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(keys) + 2), 4.5))
    values = [100 * results["benchmarks"][k]["accuracy"] for k in keys]
    lows = [v - 100 * results["benchmarks"][k]["ci95"][0] for k, v in zip(keys, values, strict=True)]
    highs = [100 * results["benchmarks"][k]["ci95"][1] - v for k, v in zip(keys, values, strict=True)]
    ax.bar(
        range(len(keys)), values, yerr=[lows, highs], capsize=4, color="#4C72B0", label=f"{results['scoring']} (95% CI)"
    )
    markers = ["D", "*", "^", "s"]
    for index, model in enumerate(results["paper_models"]):
        points = [
            (i, PAPER[model][BENCHMARKS[k].paper_column or ""])
            for i, k in enumerate(keys)
            if BENCHMARKS[k].paper_column in PAPER[model]
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, marker=markers[index % len(markers)], s=60, zorder=3, label=f"paper: {model}")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=45, ha="right")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
