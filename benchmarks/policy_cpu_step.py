"""Time and memory of one Megatron training step of the tiny Qwen2.5-VL on CPU, per parallel layout.

    python benchmarks/policy_cpu_step.py [--samples 8] [--steps 3] [--layouts tp1,dp2,tp2,tp2_sp,pp2]

For each layout a fresh group of processes (gloo on 127.0.0.1) builds the policy from a tiny checkpoint built
offline, runs one warm-up step and then `--steps` timed `train_step`s (forward + backward over the micro-batches,
clip, AdamW) on `--samples` processed samples (one 56x56 image each, prompt + 32 response tokens). Prints the
median step time, the token throughput, the time of one `compute_log_probs`, and the peak resident memory of the
largest rank (it includes the Python / torch / Megatron libraries, ~1 GB). Processes share the machine's cores
(each gets cores / processes threads), so layouts with 2 processes use the same 2 cores as one with 1.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

LAYOUTS: dict[str, tuple[int, dict[str, Any]]] = {
    "tp1": (1, {}),
    "dp2": (2, {}),
    "tp2": (2, {"tensor_model_parallel_size": 2}),
    "tp2_sp": (2, {"tensor_model_parallel_size": 2, "sequence_parallel": True}),
    "pp2": (2, {"pipeline_model_parallel_size": 2}),
}
RESPONSE_TOKENS = 32


def make_batch(model_dir: Path, samples: int) -> dict[str, torch.Tensor]:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    generator = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(56, 56, 3, generator=generator) * 255).to(torch.uint8).numpy())
    content = [{"type": "image"}, {"type": "text", "text": "Is the cup left of the man?"}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    encoded = processor(text=[text] * samples, images=[image] * samples, return_tensors="pt")
    response = torch.randint(100, 1500, (samples, RESPONSE_TOKENS), generator=generator)
    input_ids = torch.cat([encoded["input_ids"], response], dim=1)
    attention = torch.ones_like(input_ids, dtype=torch.bool)
    response_mask = torch.zeros_like(attention)
    response_mask[:, -RESPONSE_TOKENS:] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": response_mask,
        "pixel_values": encoded["pixel_values"],
        "image_grid_thw": encoded["image_grid_thw"],
        "advantages": torch.randn(samples, generator=generator),
    }


def loss_fn(log_probs, batch, scale):  # type: ignore[no-untyped-def]
    return -(batch.advantages[:, None] * log_probs * batch.response_mask).sum() / scale.num_tokens, {}


def worker(rank: int, model_dir: str, tensors: dict, parallel: dict, steps: int) -> dict[str, float]:
    from nemo_spatial.batch import PolicyBatch
    from nemo_spatial.models.qwen25_vl.config import PolicyConfig
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig

    cpu_compat.activate(ParallelConfig(**parallel))  # an entry point: the CPU mode before the policy is built
    batch = PolicyBatch(**tensors)
    policy = MegatronPolicy(PolicyConfig(hf_path=model_dir, max_seq_length=512), ParallelConfig(**parallel))
    batch = batch.shard(*policy.data_shard)  # each rank trains on its data-parallel share
    policy.train_step(batch, loss_fn)  # warm-up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        policy.train_step(batch, loss_fn)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    policy.compute_log_probs(batch)
    logprob_seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_seconds": statistics.median(times), "logprob_seconds": logprob_seconds, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args()

    from nemo_spatial.models.tiny import build_tiny_qwen25_vl
    from nemo_spatial.parallel.launch import spawn

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_qwen25_vl(Path(tmp) / "tiny", seed=0)
        tensors = make_batch(model_dir, args.samples)
        tokens = int(tensors["attention_mask"].sum())
        print(f"tiny Qwen2.5-VL, {args.samples} samples x {tensors['input_ids'].shape[1]} tokens, fp32, CPU")
        print(f"{'layout':8} {'procs':>5} {'step s':>8} {'tokens/s':>9} {'log_probs s':>10} {'peak RSS MB':>11}")
        for name in args.layouts.split(","):
            nprocs, parallel = LAYOUTS[name]
            results = spawn(worker, nprocs=nprocs, args=(str(model_dir), tensors, parallel, args.steps))
            step = max(r["step_seconds"] for r in results)
            log_probs = max(r["logprob_seconds"] for r in results)
            peak = max(r["peak_rss_mb"] for r in results)
            print(f"{name:8} {nprocs:5d} {step:8.3f} {tokens / step:9.0f} {log_probs:10.3f} {peak:11.0f}")


if __name__ == "__main__":
    main()
