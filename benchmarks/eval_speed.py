"""Eval throughput: the vllm backend against upstream's way (transformers, one sample at a time), same samples.

    python benchmarks/eval_speed.py [--samples 64] [--max-new-tokens 64] [--model DIR] [--benchmark cv-bench-2D]

On the same prompts (fixture rows of one benchmark in its real schema, the spatialthinker template, the same
pixel bounds), greedy with the same settings, in one process:
1. vllm: `VllmBackend` (in-process engine, every prompt submitted at once); engine start timed apart.
2. upstream's way: `HfBackend` with batch size 1 (upstream's default `--batch_size 1`: one `generate` per sample).
3. for reference, `HfBackend` batched (left padding) with --hf-batch prompts per call.
Prints samples/s of each, the ratio vllm / upstream's way (goal >= 10x), and whether the greedy responses agree.
Defaults: the tiny Qwen2.5-VL on CPU (float32, built offline); --model for a real checkpoint (GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_spatial.eval.backends.base import BackendOptions, Generated
from nemo_spatial.eval.benchmarks import BENCHMARKS
from nemo_spatial.eval.loading import load_samples
from nemo_spatial.eval.prompts import Prompt, build_prompt
from nemo_spatial.eval.synth import write_fixture
from nemo_spatial.models.tiny import build_tiny_qwen25_vl


def timed(label: str, generate, prompts: list[Prompt]) -> tuple[float, list[Generated]]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    outputs = generate(prompts)
    seconds = time.perf_counter() - started
    errors = sum(o.error is not None for o in outputs)
    print(f"{label:<34} {len(prompts) / seconds:8.2f} samples/s  ({seconds:.1f} s, {errors} errors)", flush=True)
    return len(prompts) / seconds, outputs


def one_at_a_time(backend, prompts: list[Prompt]) -> list[Generated]:  # type: ignore[no-untyped-def]
    """Upstream's loop: one `generate` per sample (a running rate is printed, in case the run is cut short)."""
    outputs: list[Generated] = []
    started = time.perf_counter()
    for index, prompt in enumerate(prompts, 1):
        outputs.extend(backend.generate([prompt]))
        if index % 4 == 0:
            print(f"  ... {index} samples, {index / (time.perf_counter() - started):.3f} samples/s", flush=True)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--benchmark", default="cv-bench-2D")
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--min-pixels", type=int, default=3136 * 4)
    parser.add_argument("--max-pixels", type=int, default=3136 * 16)
    parser.add_argument("--skip-hf-batched", action="store_true")
    args = parser.parse_args()

    from nemo_spatial.eval.backends.hf import HfBackend
    from nemo_spatial.eval.backends.vllm import VllmBackend

    work = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    model = args.model or build_tiny_qwen25_vl(work / "tiny", seed=0)
    bench = BENCHMARKS[args.benchmark]
    write_fixture(work / "data", bench, n=args.samples)
    samples = load_samples(bench, work / "data")[: args.samples]
    prompts = [
        build_prompt(s, "spatialthinker", (args.min_pixels, args.max_pixels), bench.image_base64) for s in samples
    ]
    cpu = args.model is None
    options = BackendOptions(
        model=str(model), max_new_tokens=args.max_new_tokens, batch_size=max(64, args.samples),
        dtype="float32" if cpu else "auto", max_model_len=8192, kv_cache_gb=1.0 if cpu else None,
    )  # fmt: skip
    print(f"{len(prompts)} {bench.key} prompts, max_new_tokens {args.max_new_tokens}, model {model}")

    started = time.perf_counter()
    vllm = VllmBackend(options)
    print(f"{'vllm engine start':<34} {time.perf_counter() - started:8.1f} s")
    timed("vllm (warm-up, 2 samples)", vllm.generate, prompts[:2])
    vllm_rate, vllm_out = timed("vllm backend (batched)", vllm.generate, prompts)
    vllm.close()

    hf = HfBackend(BackendOptions(**{**options.__dict__, "batch_size": 1}))
    timed("hf (warm-up, 1 sample)", hf.generate, prompts[:1])
    upstream_rate, hf_out = timed("upstream's way (hf, 1 at a time)", lambda ps: one_at_a_time(hf, ps), prompts)
    if not args.skip_hf_batched:
        hf.options.batch_size = args.hf_batch
        timed(f"hf backend (batch {args.hf_batch})", hf.generate, prompts)
    same = sum(a.text == b.text for a, b in zip(vllm_out, hf_out, strict=True))
    print(f"speed-up vllm / upstream's way: {vllm_rate / upstream_rate:.1f}x (goal >= 10x)")
    print(f"greedy responses identical: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
