"""`python -m nemo_spatial.eval`: evaluate a model on the paper's spatial benchmarks (`list` shows them).

python -m nemo_spatial.eval --model DIR|owner/name|RUN|RUN/checkpoints/step_N --benchmarks paper
python -m nemo_spatial.eval --backend replay --responses samples.jsonl --out DIR
python -m nemo_spatial.eval list
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from nemo_spatial.cli import add_verbose_flag, run_main
from nemo_spatial.errors import UserError
from nemo_spatial.eval.backends.base import BACKENDS, BackendOptions
from nemo_spatial.eval.benchmarks import listing, resolve_benchmarks
from nemo_spatial.eval.prompts import TEMPLATES

DEFAULT_BATCH = {"vllm": 128, "hf": 8}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nemo_spatial.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="HF directory, hub name, API model name, or a training RUN / RUN/checkpoints/step_N")
    p.add_argument("--benchmarks", default="paper", help="comma-separated keys, 'paper' (default) or 'all'")
    p.add_argument("--backend", default="vllm", choices=BACKENDS)
    p.add_argument("--template", default="spatialthinker", choices=TEMPLATES)
    p.add_argument("--data-dir", type=Path, help="local copies: DIR/<key>/ or DIR/<owner>/<name>/")
    p.add_argument("--limit", type=int, help="N samples per benchmark, seeded and stratified by task")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the newest for this model)")
    p.add_argument("--upstream-scoring", action="store_true", help="score exactly as upstream, defects included")
    p.add_argument("--out", type=Path, help="output folder (default outputs/eval/<model>/<timestamp>/)")
    p.add_argument("--responses", type=Path, help="replay: a JSONL of saved responses (e.g. a run's samples.jsonl)")
    p.add_argument("--url", help="vllm: a running vLLM server's base URL (…/v1); openai/anthropic: another endpoint")
    p.add_argument("--batch-size", type=int, help="prompts per chunk: vllm 128, hf 8 (its batch), APIs 32")
    p.add_argument("--concurrency", type=int, default=8, help="API requests in flight")
    p.add_argument("--max-retries", type=int, default=6, help="API retries on 429/5xx/connection errors")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--repetition-penalty", type=float, help="default: the checkpoint's generation_config.json")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    p.add_argument("--max-model-len", type=int, default=16384)
    p.add_argument("--kv-cache-gb", type=float, help="vllm: KV cache size (CPU default 2 GB; GPU: utilization)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs / compile (faster start)")
    p.add_argument("--min-pixels", type=int, help="default: training's 262144 (upstream template: 3136)")
    p.add_argument("--max-pixels", type=int, help="default: training's 4194304 (upstream template: 12845056)")
    p.add_argument("--paper-model", action="append", help="paper row(s) to compare with (default: by base model)")
    p.add_argument("--no-progress", action="store_true")
    add_verbose_flag(p)
    return p


def default_out(label: str, resume: bool) -> Path:
    base = Path("outputs/eval") / label
    if resume:
        runs = sorted(p for p in base.glob("*") if (p / "config.json").is_file()) if base.is_dir() else []
        if not runs:
            raise UserError(f"--resume: no earlier run under {base}; give its --out")
        return runs[-1]
    return base / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["list"]:
        print(listing())
        return 0
    args = parser().parse_args(args_list)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from nemo_spatial.eval.runner import RunConfig, replay, run

    if args.backend == "replay":
        if args.responses is None:
            raise UserError("--backend replay needs --responses FILE.jsonl")
        out = args.out or Path("outputs/eval/replay") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        results = replay(args.responses, out, args.upstream_scoring, args.paper_model or [])
        return _summarise(results, out)
    if not args.model:
        raise UserError("--model is required (a HF directory, hub name, API model name or training run)")
    from nemo_spatial.eval.model_ref import resolve_model

    ref = resolve_model(args.model, args.backend)
    benches = resolve_benchmarks(args.benchmarks)
    options = BackendOptions(
        model=ref.name,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size or DEFAULT_BATCH.get(args.backend, 32),
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        url=args.url,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        kv_cache_gb=args.kv_cache_gb,
        enforce_eager=args.enforce_eager,
        tensor_parallel_size=args.tensor_parallel_size,
        max_images=max(max(len(b.images) for b in benches), 8 if any(b.key == "mindcube-tiny" for b in benches) else 1),
    )
    cfg = RunConfig(
        model=ref.name,
        benchmarks=[b.key for b in benches],
        out=args.out or default_out(ref.label, args.resume),
        backend=args.backend,
        template=args.template,
        data_dir=args.data_dir,
        limit=args.limit,
        seed=args.seed,
        resume=args.resume,
        upstream_scoring=args.upstream_scoring,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        paper_models=args.paper_model or [],
        options=options,
        progress=not args.no_progress,
    )
    return _summarise(run(cfg), cfg.out)


def _summarise(results: dict[str, object], out: Path) -> int:
    benchmarks = results["benchmarks"]
    assert isinstance(benchmarks, dict)
    for key, r in benchmarks.items():
        acc = r["accuracy"]
        shown = "-" if acc is None else f"{100 * acc:.1f}%"
        print(f"{key:<20} n={r['n']:<5} accuracy {shown:<7} unparseable {r['unparseable']} errors {r['errors']}")
    print(f"wrote {out}/samples.jsonl, results.json, report.md, report.png")
    scored = sum(r["n"] for r in benchmarks.values())
    if scored == 0:
        print("error: no sample could be scored (every generation failed); see samples.jsonl", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
