"""One generation server vs two behind the router: generation seconds per GRPO step, as a ratio (prints; no asserts).

    python benchmarks/rollout_servers.py [--prompts 16] [--n 4] [--max-tokens 32] [--steps 3]

What it measures, in one run on this machine with real vLLM (CPU build) servers and the tiny Qwen2.5-VL:
1. one spawned server (`ServerGenerator`, today's path): the seconds of one step's rollouts (`--prompts` prompts
   x n samples, one image each, `--max-tokens` new tokens), the median of `--steps` steps after one warm-up;
2. two spawned servers behind `RouterGenerator` (generation.num_servers=2): the same, plus each server's busy
   seconds and the tail (the time between the first and the last server finishing);
3. the ratio one/two (2.0 would be perfect scaling).
The servers of each case run alone (the one-server case is stopped before the two start). On a host whose
cores the two servers must share (the 2-core development machine), two servers cannot be faster than one:
the ratio there measures the router's overhead, not the scaling, which needs a server per GPU (or per NUMA
node). The weights are pushed once per case (version 1) so that the rollouts are on-policy, as in training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_spatial.generation import GenerationConfig, GenerationRequest, Generator, SamplingConfig, build_generator
from nemo_spatial.models.tiny import TINY, build_tiny_qwen25_vl

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Describe the scene graph of this image.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def requests_for(count: int) -> list[GenerationRequest]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((84, 112, 3)) * 255).astype("uint8")) for _ in range(count)]
    return [GenerationRequest(f"p{i}", PROMPT, images=[image]) for i, image in enumerate(images)]


def config(num_servers: int) -> GenerationConfig:
    return GenerationConfig(
        dtype="float32", max_model_len=1024, max_num_seqs=32, kv_cache_gb=0.25, enforce_eager=True,
        num_servers=num_servers, startup_timeout_s=900.0, sampling=SamplingConfig(max_tokens=32),
    )  # fmt: skip


def run_case(num_servers: int, model_dir: Path, work: Path, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """(median generation seconds per step, the last step's generator metrics)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    generator: Generator = build_generator(config(num_servers), str(model_dir), work / f"run-{num_servers}")
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir)
        generator.update_weights(iter(model.state_dict().items()), 1)
        params = SamplingConfig(n=args.n, max_tokens=args.max_tokens, temperature=1.0)
        batch = requests_for(args.prompts)
        generator.generate(batch[: max(1, args.prompts // 4)], params)  # warm-up
        generator.release_memory()
        seconds, metrics = [], {}
        for _ in range(args.steps):
            generator.prepare_for_generation()
            started = time.perf_counter()
            rollouts = generator.generate(batch, params)
            seconds.append(time.perf_counter() - started)
            metrics = generator.release_memory()
            assert len(rollouts) == args.prompts * args.n and all(r.ok for r in rollouts)
        return statistics.median(seconds), metrics
    finally:
        generator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-servers-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_qwen25_vl(work / "tiny", seed=0, shape=TINY)
        one, _ = run_case(1, model_dir, work, args)
        two, metrics = run_case(2, model_dir, work, args)
    print(f"rollouts per step: {args.prompts} prompts x n={args.n}, up to {args.max_tokens} new tokens, 1 image each")
    print(f"one server : {one:7.2f} s generation per step (median of {args.steps})")
    print(f"two servers: {two:7.2f} s generation per step (median of {args.steps})")
    for i in range(2):
        busy, groups = metrics[f"generation/server{i}_busy_s"], metrics[f"generation/server{i}_groups"]
        print(f"  server {i}: busy {busy:6.2f} s, {groups:.0f} groups (last step)")
    print(f"  tail (first to last server finishing): {metrics['generation/tail_s']:.2f} s (last step)")
    print(f"ratio one/two: {one / two:.2f}x (2.00 = perfect scaling; on shared cores expect <= 1)")


if __name__ == "__main__":
    main()
