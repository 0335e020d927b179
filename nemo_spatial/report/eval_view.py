"""The viewer on an eval run: one page per benchmark from `samples.jsonl`, wrong answers first.

`python -m nemo_spatial.eval` writes one JSON object per line: benchmark, sample_id, task, prompt, choices,
answer, response, extracted, correct, latency. Each page lists the benchmark's accuracy (overall and per task)
and then every sample, the wrong ones first (in file order within each group): the prompt, the choices with the
gold answer and the extracted one marked, the raw response, and, when the response carries a `<scene>` block,
its parsed scene graph or why it does not parse. A line that is not such a record is counted and named on the
index page, never fatal.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_spatial.fileio import atomic_write_text
from nemo_spatial.report.html import esc, page, scene_json, table
from nemo_spatial.report.scenes import scene_problems
from nemo_spatial.reward.parsing import first_block, parse_scene

FIELDS = ("benchmark", "sample_id", "task", "prompt", "choices", "answer", "response", "extracted", "correct")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EvalSample:
    benchmark: str
    sample_id: str
    task: str
    prompt: str
    choices: list[str]
    answer: str
    response: str
    extracted: str
    correct: bool
    latency: float | None


def read_samples(path: Path) -> tuple[list[EvalSample], list[str]]:
    """The records of `path` and, for each line that is not one, `line N: why`."""
    samples: list[EvalSample] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            samples.append(_sample(json.loads(line)))
        except (ValueError, TypeError, KeyError) as error:
            problems.append(f"line {number}: {error}")
    return samples, problems


def _sample(record: Any) -> EvalSample:
    if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not a JSON object")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise KeyError(f"missing field(s) {', '.join(missing)}")
    choices = record["choices"] if isinstance(record["choices"], list) else [record["choices"]]
    latency = record.get("latency")
    return EvalSample(
        benchmark=str(record["benchmark"]),
        sample_id=str(record["sample_id"]),
        task=str(record["task"] or ""),
        prompt=str(record["prompt"]),
        choices=[str(c) for c in choices if c is not None],
        answer=str(record["answer"]),
        response=str(record["response"] or ""),
        extracted=str(record["extracted"] or ""),
        correct=bool(record["correct"]),
        latency=float(latency) if isinstance(latency, (int, float)) else None,
    )


def render_eval(samples_path: Path, out_dir: Path) -> list[Path]:
    """One page per benchmark under `out_dir` and `out_dir/index.html`; returns them, the index last."""
    samples, problems = read_samples(samples_path)
    by_benchmark: dict[str, list[EvalSample]] = defaultdict(list)
    for sample in samples:
        by_benchmark[sample.benchmark].append(sample)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_benchmark_page(name, items, out_dir) for name, items in sorted(by_benchmark.items())]
    rows = [
        [
            f"<a href='{esc(p.name)}'>{esc(name)}</a>",
            str(len(items)),
            f"{sum(s.correct for s in items) / len(items):.1%}",
            str(sum(not s.correct for s in items)),
        ]
        for p, (name, items) in zip(written, sorted(by_benchmark.items()), strict=True)
    ]
    body = f"<h1>Eval samples: {esc(samples_path)}</h1>"
    body += table(["benchmark", "samples", "accuracy", "wrong"], rows, frozenset({0}))
    if problems:
        listed = "".join(f"<li>{esc(p)}</li>" for p in problems[:50])
        body += f"<div class='problem'>{len(problems)} line(s) not read:<ul>{listed}</ul></div>"
    index = out_dir / "index.html"
    atomic_write_text(index, page("eval samples", body))
    return [*written, index]


def _benchmark_page(name: str, items: list[EvalSample], out_dir: Path) -> Path:
    ordered = [s for s in items if not s.correct] + [s for s in items if s.correct]
    tasks: dict[str, list[bool]] = defaultdict(list)
    for sample in items:
        tasks[sample.task or "(none)"].append(sample.correct)
    task_rows = [[task, str(len(v)), f"{sum(v) / len(v):.1%}"] for task, v in sorted(tasks.items())]
    accuracy = sum(s.correct for s in items) / len(items)
    body = [
        "<nav><a href='index.html'>all benchmarks</a></nav>",
        f"<h1>{esc(name)}: {accuracy:.1%} of {len(items)} correct; wrong answers first</h1>",
        table(["task", "samples", "accuracy"], task_rows),
    ]
    body += [_sample_card(sample) for sample in ordered]
    path = out_dir / f"{SAFE_NAME.sub('_', name) or 'benchmark'}.html"
    atomic_write_text(path, page(f"eval: {name}", "\n".join(body)))
    return path


def _sample_card(s: EvalSample) -> str:
    verdict = "<span class='ok'>correct</span>" if s.correct else "<span class='bad'>wrong</span>"
    latency = f", {s.latency:.2f} s" if s.latency is not None else ""
    choices = "".join(f"<li>{_choice(c, s)}</li>" for c in s.choices)
    parts = [
        f"<h2>{esc(s.sample_id)} ({esc(s.task)}): {verdict}{latency}</h2>",
        f"<p>Gold: <b>{esc(s.answer)}</b>; extracted: <b>{esc(s.extracted) or '(nothing)'}</b></p>",
        f"<ul>{choices}</ul>" if choices else "",
        f"<details><summary>prompt</summary><pre>{esc(s.prompt)}</pre></details>",
        f"<h3>Response</h3><pre>{esc(s.response)}</pre>",
    ]
    if first_block(s.response, "scene") is not None:
        scene = parse_scene(s.response)
        problems = scene_problems(s.response)
        if problems:
            parts.append("<div class='problem'>scene: " + "; ".join(esc(p) for p in problems) + "</div>")
        if scene:
            parts.append(f"<h3>Parsed scene graph</h3><pre>{esc(scene_json(scene))}</pre>")
    state = "wrong" if not s.correct else "correct"
    return f"<div class='card sample {state}'><div>{''.join(parts)}</div></div>"


def _choice(choice: str, s: EvalSample) -> str:
    marks = []
    if _same(choice, s.answer):
        marks.append("<span class='ok'>gold</span>")
    if s.extracted and _same(choice, s.extracted):
        marks.append("<span class='ok'>chosen</span>" if s.correct else "<span class='bad'>chosen</span>")
    return esc(choice) + (" " + " ".join(marks) if marks else "")


def _same(choice: str, answer: str) -> bool:
    """A choice `(B) red` is the answer `B`, `(B)`, or `(B) red` (case- and space-insensitive)."""
    c, a = choice.strip().lower(), answer.strip().lower()
    if not a:
        return False
    letter = re.match(r"^\(?([a-z])\)", c)
    return c == a or (letter is not None and a.strip("()") == letter.group(1))
