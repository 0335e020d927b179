"""One evaluation run: load, sample (`--limit`), prompt, generate in chunks, checkpoint, score, report.

Resume and determinism: every generated sample is appended (flushed, fsynced) to `DIR/generations.jsonl`
before the next chunk starts, keyed by (benchmark, row, sample_id). Scoring happens only at the end, over all
samples in dataset order, so a run resumed after a kill (`--resume`, same DIR) scores exactly the responses an
uninterrupted run would, and gives the same results (upstream's resume restores neither `correct` nor its
per-task counters). A torn last line of a killed run is dropped; samples whose generation failed are retried.
`--resume` refuses a DIR whose recorded settings (model, benchmarks, template, limit, seed, pixels,
generation) differ from this run's.

`--limit N`: per benchmark, N samples drawn with `random.Random(f"{seed}:{key}")`, stratified by task
(largest-remainder quotas proportional to each task's size), then kept in dataset order (upstream takes the
first N rows before shuffling, often all from one task).
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nemo_spatial.data.images import ImageError
from nemo_spatial.errors import UserError
from nemo_spatial.eval.backends.base import Backend, BackendOptions, Generated, build_backend
from nemo_spatial.eval.benchmarks import Benchmark, get_benchmark
from nemo_spatial.eval.loading import Sample, load_samples
from nemo_spatial.eval.prompts import Prompt, build_prompt, pixel_bounds
from nemo_spatial.fileio import atomic_write_text

logger = logging.getLogger(__name__)
GENERATIONS = "generations.jsonl"
# Settings that must match for --resume to continue a run.
IDENTITY = ("model", "benchmarks", "backend", "template", "limit", "seed", "pixels", "generation")


@dataclass
class RunConfig:
    model: str
    benchmarks: list[str]
    out: Path
    backend: str = "vllm"
    template: str = "spatialthinker"
    data_dir: Path | None = None
    limit: int | None = None
    seed: int = 42
    resume: bool = False
    upstream_scoring: bool = False
    min_pixels: int | None = None
    max_pixels: int | None = None
    responses: Path | None = None
    paper_models: list[str] = field(default_factory=list)
    options: BackendOptions | None = None
    progress: bool = True


def limit_samples(samples: list[Sample], limit: int | None, seed: int, paired: bool = False) -> list[Sample]:
    """`--limit`: a seeded sample stratified by task, in dataset order. `paired` (MMVP, 3DSRBench-Full) draws
    whole pairs (rows 2k, 2k+1), so the pair metric still has pairs to score."""
    if limit is None or limit >= len(samples):
        return samples
    if limit <= 0:
        raise UserError(f"--limit {limit} must be a positive number of samples per benchmark")
    units: list[list[Sample]] = []
    for sample in samples:
        if paired and units and units[-1][0].row // 2 == sample.row // 2:
            units[-1].append(sample)
        else:
            units.append([sample])
    wanted = -(-limit // 2) if paired else limit
    groups: dict[str | None, list[list[Sample]]] = defaultdict(list)
    for unit in units:
        groups[unit[0].task].append(unit)
    exact = {task: wanted * len(group) / len(units) for task, group in groups.items()}
    quotas = {task: int(value) for task, value in exact.items()}
    by_remainder = sorted(groups, key=lambda t: exact[t] - quotas[t], reverse=True)
    for task in by_remainder[: wanted - sum(quotas.values())]:
        quotas[task] += 1
    rng = random.Random(f"{seed}:{samples[0].benchmark}")
    chosen = [s for task, group in groups.items() for unit in rng.sample(group, quotas[task]) for s in unit]
    return sorted(chosen, key=lambda s: s.row)


def git_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def _record(sample: Sample, prompt_text: str | None, generated: Generated) -> dict[str, Any]:
    return {
        "benchmark": sample.benchmark,
        "sample_id": sample.sample_id,
        "task": sample.task,
        "prompt": prompt_text,
        "choices": sample.choices,
        "answer": sample.answer,
        "response": generated.text,
        "latency": round(generated.latency_s, 4),
        "error": generated.error,
        "row": sample.row,
        "meta": sample.meta,
        "n_images": len(sample.images),
        **({"info": generated.info} if generated.info else {}),
    }


def record_key(record: dict[str, Any]) -> tuple[str, int, str]:
    return (str(record["benchmark"]), int(record.get("row", -1)), str(record["sample_id"]))


def read_generations(path: Path) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Complete, successful records of an earlier (possibly killed) run of this DIR."""
    done: dict[tuple[str, int, str], dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a killed run
        if isinstance(record, dict) and record.get("error") is None:
            done[record_key(record)] = record
    return done


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def prepare_out(cfg: RunConfig, identity: dict[str, Any]) -> None:
    config_path = cfg.out / "config.json"
    if cfg.resume:
        if not config_path.is_file():
            raise UserError(f"--resume: {cfg.out} holds no config.json of an earlier run; drop --resume to start one")
        earlier = json.loads(config_path.read_text()).get("identity", {})
        changed = [k for k in IDENTITY if _canonical(earlier.get(k)) != _canonical(identity.get(k))]
        if changed:
            raise UserError(
                f"--resume: {cfg.out} was run with other settings ({', '.join(changed)}: "
                f"{[earlier.get(k) for k in changed]} vs now {[identity.get(k) for k in changed]}); "
                "use the same flags or a new --out"
            )
        return
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise UserError(f"--out {cfg.out} is not empty; pass --resume to continue that run, or choose a new --out")
    cfg.out.mkdir(parents=True, exist_ok=True)


def generate_all(cfg: RunConfig, benches: list[Benchmark], backend_holder: list[Backend]) -> list[dict[str, Any]]:
    """Every sample's generation record, in benchmark then dataset order (from earlier runs where done)."""
    assert cfg.options is not None
    path = cfg.out / GENERATIONS
    done = read_generations(path) if cfg.resume else {}
    api = cfg.backend in ("openai", "anthropic")
    bounds = None if api else pixel_bounds(cfg.template, cfg.min_pixels, cfg.max_pixels)
    records: list[dict[str, Any]] = []
    with open(path, "a", encoding="utf-8") as sink:
        for bench in benches:
            paired = bench.metric in ("pairs", "view_pairs")
            samples = limit_samples(load_samples(bench, cfg.data_dir), cfg.limit, cfg.seed, paired)
            todo = [s for s in samples if (s.benchmark, s.row, s.sample_id) not in done]
            fresh = _generate_benchmark(cfg, bench, todo, bounds, backend_holder, sink, len(samples) - len(todo))
            for sample in samples:
                key = (sample.benchmark, sample.row, sample.sample_id)
                records.append(done[key] if key in done else fresh[key])
    return records


def _generate_benchmark(
    cfg: RunConfig,
    bench: Benchmark,
    todo: list[Sample],
    bounds: tuple[int, int] | None,
    backend_holder: list[Backend],
    sink: Any,
    already: int,
) -> dict[tuple[str, int, str], dict[str, Any]]:
    from tqdm import tqdm

    assert cfg.options is not None
    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    chunk = max(1, cfg.options.batch_size)
    bar = tqdm(total=len(todo) + already, initial=already, desc=bench.key, unit="sample", disable=not cfg.progress)
    for start in range(0, len(todo), chunk):
        prompts: list[Prompt] = []
        for sample in todo[start : start + chunk]:
            try:
                prompts.append(build_prompt(sample, cfg.template, bounds, bench.image_base64))
            except (ImageError, UserError) as error:
                record = _record(sample, None, Generated(None, f"image: {error}"))
                out[record_key(record)] = record
                sink.write(json.dumps(record) + "\n")
        if prompts:
            if not backend_holder:
                backend_holder.append(build_backend(cfg.backend, cfg.options))
            for prompt, generated in zip(prompts, backend_holder[0].generate(prompts), strict=True):
                record = _record(prompt.sample, prompt.text, generated)
                out[record_key(record)] = record
                sink.write(json.dumps(record) + "\n")
        sink.flush()
        os.fsync(sink.fileno())
        bar.update(len(todo[start : start + chunk]))
    bar.close()
    return out


def identity_of(cfg: RunConfig) -> dict[str, Any]:
    options = asdict(cfg.options) if cfg.options else {}
    generation = {k: options.get(k) for k in ("max_new_tokens", "repetition_penalty", "dtype", "url")}
    return {
        "model": cfg.model,
        "benchmarks": cfg.benchmarks,
        "backend": cfg.backend,
        "template": cfg.template,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "pixels": list(pixel_bounds(cfg.template, cfg.min_pixels, cfg.max_pixels)),
        "generation": generation,
    }


def write_config(cfg: RunConfig, identity: dict[str, Any], backend_settings: dict[str, Any] | None) -> None:
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for package in ("torch", "transformers", "vllm", "openai", "anthropic", "datasets"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    config = {
        "identity": identity,
        "command": sys.argv,
        "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
        "scoring": "upstream" if cfg.upstream_scoring else "strict",
        "backend_settings": backend_settings,
        "options": asdict(cfg.options) if cfg.options else None,
        "responses": str(cfg.responses) if cfg.responses else None,
        "git": git_revision(),
        "versions": versions,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(cfg.out / "config.json", json.dumps(config, indent=2, default=str) + "\n")


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) an evaluation; returns results.json's content."""
    from nemo_spatial.eval.report import write_outputs

    benches = [get_benchmark(k) for k in cfg.benchmarks]
    identity = identity_of(cfg)
    prepare_out(cfg, identity)
    if not cfg.resume:  # a resumed run keeps the earlier record until it has its own backend's settings
        write_config(cfg, identity, None)
    holder: list[Backend] = []
    try:
        records = generate_all(cfg, benches, holder)
        settings = holder[0].settings if holder else None
    finally:
        for backend in holder:
            backend.close()
    if settings is not None or not cfg.resume:
        write_config(cfg, identity, settings)
    return write_outputs(cfg.out, records, cfg.upstream_scoring, cfg.model, cfg.paper_models)


def replay(responses: Path, out: Path, upstream_scoring: bool, paper_models: list[str]) -> dict[str, Any]:
    """Re-score saved outputs: each line holds at least benchmark, sample_id, task, choices, answer, response."""
    from nemo_spatial.eval.report import write_outputs

    if not responses.is_file():
        raise UserError(f"--responses {responses}: no such file")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(responses.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{responses}:{number}: not JSON ({error})") from None
        missing = [k for k in ("benchmark", "sample_id", "task", "choices", "answer", "response") if k not in record]
        if missing:
            raise UserError(
                f"{responses}:{number}: missing {', '.join(missing)} (a replay line needs benchmark, "
                "sample_id, task, choices, answer, response)"
            )
        get_benchmark(str(record["benchmark"]))
        record.setdefault("row", number - 1)
        record.setdefault("meta", {})
        records.append(record)
    if not records:
        raise UserError(f"--responses {responses} holds no samples")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    model = str(records[0].get("model", responses.stem))
    config = {"replay": str(responses), "scoring": "upstream" if upstream_scoring else "strict", "git": git_revision()}
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    return write_outputs(out, records, upstream_scoring, model, paper_models)
