"""Step time of synchronous GRPO vs overlapped GRPO (`trainer.async_rollouts=1`) with the tiny model on CPU.

    python benchmarks/async_rollouts.py [--steps 6] [--nproc 1] [--max-tokens 48]

Runs `python -m nemo_spatial.train` twice in one invocation, on the same offline tiny Qwen2.5-VL (built in a
temporary folder) and synthetic data: first with `trainer.async_rollouts=0`, then with `=1`; each spawns its
own vLLM CPU server. From each run's metrics.jsonl it prints the median over steps 2..N (step 1 has nothing
to overlap and pays the warm-up) of: the step's seconds; `generate` (the time the loop waited for rollouts:
the whole request when synchronous, only the part not hidden behind training when async); the background
request's own seconds (async only); `train` (old log-probs + reference log-probs + the optimizer updates);
and the ratio of the step times.

On a 2-core machine the generation server and the trainer share the two cores, so the overlapped phases slow
each other down: the async step is closer to max(generate, train) only when each side has cores of its own
(placement apart on GPUs). The figures printed here are what this machine gives, not that bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRAIN_PHASES = ("timing/old_log_probs_s", "timing/ref_log_probs_s", "timing/update_s")


def run(model_dir: Path, out_dir: Path, name: str, k: int, args: argparse.Namespace) -> list[dict[str, float]]:
    command = [
        sys.executable, "-m", "nemo_spatial.train", "--config", "conf/debug/tiny_cpu.yaml", "--nproc",
        str(args.nproc), f"policy.hf_path={model_dir}", f"run.output_dir={out_dir}", f"run.name={name}",
        "logging.wandb_mode=disabled", "logging.tensorboard=false", "logging.progress_bar=false",
        "logging.rollout_sample_every=0", "data.val_files=", "trainer.save_every=0",
        f"trainer.total_steps={args.steps}", f"trainer.async_rollouts={k}",
        f"generation.sampling.max_tokens={args.max_tokens}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    print(f"  {name}: {time.perf_counter() - start:.0f} s wall (process start, server start, {args.steps} steps)")
    path = out_dir / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary(records: list[dict[str, float]]) -> dict[str, float]:
    steady = records[1:]  # step 1: warm-up, and the async run generates it synchronously

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    return {
        "step_s": median([r["timing/step_s"] for r in steady]),
        "generate_s": median([r.get("timing/generate_s", 0.0) for r in steady]),
        "background_s": median(
            [r["timing/generate_background_s"] for r in steady if "timing/generate_background_s" in r]
        ),
        "train_s": median([sum(r.get(k, 0.0) for k in TRAIN_PHASES) for r in steady]),
        "reward_s": median([r.get("timing/reward_s", 0.0) for r in steady]),
        "sync_s": median([r.get("timing/sync_s", 0.0) for r in steady]),
        "lag": median([r.get("rollout/policy_lag/mean", 0.0) for r in steady]),
        "reward": median([r["reward/overall/mean"] for r in steady]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--nproc", type=int, default=1, help="trainer processes (the server is one more)")
    parser.add_argument("--max-tokens", type=int, default=48, help="response tokens per sample")
    args = parser.parse_args()
    from nemo_spatial.models.tiny import build_tiny_qwen25_vl

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen25_vl(Path(tmp) / "tiny", seed=0)
        shape = f"4 prompts x n=4 x {args.max_tokens} tokens a step, {args.nproc} trainer process(es)"
        print(f"tiny Qwen2.5-VL on CPU, {shape}")
        results = {k: summary(run(model_dir, Path(tmp), f"async{k}", k, args)) for k in (0, 1)}
    columns = ("step s", "generate s", "(background)", "train s", "reward s", "sync s", "lag")
    widths = (8, 11, 13, 8, 9, 7, 4)
    print(f"{'trainer.async_rollouts':>24} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for k, r in results.items():
        background = f"{r['background_s']:.2f}" if k else "-"
        print(
            f"{k:>24} {r['step_s']:>8.2f} {r['generate_s']:>11.2f} {background:>13} {r['train_s']:>8.2f} "
            f"{r['reward_s']:>9.2f} {r['sync_s']:>7.2f} {r['lag']:>4.1f}"
        )
    sync, overlapped = results[0], results[1]
    print(f"step time async/sync: {overlapped['step_s'] / sync['step_s']:.2f} (median of steps 2..{args.steps})")
    bound = max(sync["generate_s"], sync["train_s"]) / (sync["generate_s"] + sync["train_s"])
    print(f"ideal with cores of its own per side: max(generate, train) / (generate + train) = {bound:.2f}")


if __name__ == "__main__":
    main()
