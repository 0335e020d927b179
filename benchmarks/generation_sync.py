"""Weight-sync and generation figures for the generation server (prints a table; no assertions).

    python benchmarks/generation_sync.py [--layers 32] [--bucket-mb 512] [--repeats 3] [--skip-big]

What it measures, all on this machine with real processes:
1. memcpy bandwidth: a 1 GiB tensor copy (best of 3), the ceiling for any in-host transport.
2. Shared-memory weight sync of a ~0.5B-parameter Qwen2.5-VL-shaped checkpoint (Qwen2.5-0.5B's layer
   shapes: hidden 896, 14 heads x 64, 2 KV heads, MLP 4864; 32 layers so the offline 2,048-token vocabulary
   still gives ~0.48B parameters) into a spawned server in bf16: seconds per full sync and GB/s, split into
   the trainer's part (cast + write the buckets to /dev/shm) and the rest (vLLM loading and repacking).
3. Generation throughput (new tokens/s) of that model and of the tiny test model, batched rollouts with
   n samples per prompt, each with an image.
4. The share of a GRPO step that the sync takes, sync / (sync + generation) for one rollout batch of the
   0.5B model: an upper bound, since the trainer's forward/backward adds to the step and not to the sync.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_spatial.generation import GenerationConfig, GenerationRequest, SamplingConfig
from nemo_spatial.generation.buckets import iter_buckets, new_scratch, write_bucket
from nemo_spatial.generation.client import ServerGenerator
from nemo_spatial.generation.transport import ShmTransport
from nemo_spatial.models.tiny import TINY, TinyShape, build_tiny_qwen25_vl

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|>Describe the scene graph of this image.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def memcpy_gb_per_s(nbytes: int = 1 << 30) -> float:
    source = torch.ones(nbytes, dtype=torch.uint8)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return nbytes / 1e9 / best


def half_billion_shape(layers: int) -> TinyShape:
    return TinyShape(hidden_size=896, intermediate_size=4864, num_hidden_layers=layers, num_attention_heads=14)


def load_weights(model_dir: Path) -> list[tuple[str, torch.Tensor]]:
    """The checkpoint's tensors in ordinary memory (cloned: not views of a file map), like a trainer's."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        weights.update({name: tensor.clone() for name, tensor in load_file(shard).items()})
    return list(weights.items())


def trainer_side_seconds(weights: list[tuple[str, torch.Tensor]], bucket_bytes: int, shm_dir: Path) -> float:
    """Cast + write every bucket to shared memory, without a consumer (the trainer's share of a sync)."""
    scratch = new_scratch()
    start = time.perf_counter()
    for index, bucket in enumerate(iter_buckets(iter(weights), bucket_bytes, torch.bfloat16)):
        path = shm_dir / f"{index:05d}.safetensors"
        write_bucket(bucket, path, scratch)
        path.unlink()
    return time.perf_counter() - start


def rollout_batch(prompts: int) -> list[GenerationRequest]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((112, 112, 3)) * 255).astype("uint8")) for _ in range(prompts)]
    return [GenerationRequest(f"p{i}", PROMPT, images=[images[i]]) for i in range(prompts)]


def generation_tokens_per_s(generator: ServerGenerator, prompts: int, n: int, max_tokens: int) -> tuple[float, float]:
    params = SamplingConfig(n=n, max_tokens=max_tokens, seed=0)
    generator.generate(rollout_batch(1), SamplingConfig(n=1, max_tokens=4))  # warm-up
    start = time.perf_counter()
    rollouts = generator.generate(rollout_batch(prompts), params)
    seconds = time.perf_counter() - start
    return sum(len(r.token_ids) for r in rollouts) / seconds, seconds


def server(model_dir: Path, log_dir: Path, bucket_mb: int, dtype: str, eager: bool = False) -> ServerGenerator:
    cfg = GenerationConfig(
        enforce_eager=eager,
        dtype=dtype, max_model_len=2048, bucket_mb=bucket_mb, kv_cache_gb=1.0, startup_timeout_s=1200.0,
        sampling=SamplingConfig(max_tokens=256),
    )  # fmt: skip
    return ServerGenerator.launch(cfg, str(model_dir), log_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--bucket-mb", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    parser.add_argument("--skip-big", action="store_true", help="only the tiny model's generation throughput")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nemo-gen-bench-"))
    print(f"memcpy bandwidth: {memcpy_gb_per_s():.2f} GB/s (1 GiB tensor copy, best of 3)")

    tiny = build_tiny_qwen25_vl(work / "tiny", seed=0, shape=TINY)
    generator = server(tiny, work / "logs-tiny", args.bucket_mb[0], "float32", args.eager)
    try:
        rate, _ = generation_tokens_per_s(generator, args.prompts, args.n, args.max_tokens)
        print(f"tiny model generation: {rate:.0f} new tokens/s ({args.prompts} prompts x n={args.n}, 1 image each)")
    finally:
        generator.close()
    if args.skip_big:
        return

    model_dir = build_tiny_qwen25_vl(work / "half-billion", seed=0, shape=half_billion_shape(args.layers))
    weights = load_weights(model_dir)
    params = sum(t.numel() for _, t in weights)
    print(f"~0.5B model: {params / 1e9:.3f} B parameters, {params * 2 / 1e9:.2f} GB in bf16")
    generator = server(model_dir, work / "logs-big", args.bucket_mb[0], "bfloat16", args.eager)
    try:
        version = 0
        best: dict[int, float] = {}
        for bucket_mb in args.bucket_mb:
            generator._transport = ShmTransport(generator.control, bucket_mb << 20, "bfloat16")
            for _ in range(args.repeats):
                version += 1
                stats = generator.update_weights(iter(weights), version)
                best[bucket_mb] = min(best.get(bucket_mb, float("inf")), stats.seconds)
                print(f"  {bucket_mb} MiB buckets, sync {version}: {stats.seconds:.2f} s, {stats.gb_per_s:.2f} GB/s")
            trainer_s = trainer_side_seconds(weights, bucket_mb << 20, Path("/dev/shm"))
            print(
                f"shm sync (bf16, {bucket_mb} MiB buckets, {stats.num_buckets} buckets): best {best[bucket_mb]:.2f} s "
                f"= {stats.num_bytes / 1e9 / best[bucket_mb]:.2f} GB/s; trainer side alone (fp32 -> bf16 cast + "
                f"write to /dev/shm) {trainer_s:.2f} s"
            )
        sync_s = min(best.values())
        rate, gen_s = generation_tokens_per_s(generator, args.prompts, args.n, args.max_tokens)
        print(f"~0.5B model generation: {rate:.0f} new tokens/s, one batch in {gen_s:.1f} s")
        print(f"sync share of (sync + generation) per GRPO step: {sync_s / (sync_s + gen_s):.1%} (upper bound)")
    finally:
        generator.close()


if __name__ == "__main__":
    main()
