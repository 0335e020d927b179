"""Tokens/s and MFU of one forward + backward of a Qwen2.5-VL-3B-shaped Megatron policy in bf16 on one GPU.

    python benchmarks/policy_gpu_throughput.py [--seq-len 4096] [--micro-batch-size 2] [--micro-batches 4]
        [--image-size 448] [--steps 5] [--fp8 {delayed,tensorwise,blockwise}] [--peak-tflops 989]
    python benchmarks/policy_gpu_throughput.py --shape tiny --seq-len 128 --steps 1   # a CPU dry run of the path

The model is Qwen2.5-VL-3B-Instruct's shape (36 layers, hidden 2048, 16 heads / 2 KV heads, vocab 151,936, tied
embeddings; a 32-block vision tower of width 1280) with random weights, built by Megatron-Bridge from the HF config
alone, with Transformer Engine's layer spec where TE is installed. Each sample is one image of `--image-size`^2
pixels (its merged image tokens inside the prompt) and text up to `--seq-len` tokens. One measured step is
forward + backward over `--micro-batches` micro-batches (Megatron's schedule, DDP grad buffers, vocab-parallel
log-probs and a token-mean loss), no optimizer step.

FLOPs counted (forward x 3 for forward + backward): language model 2 x (linear weights) per token, attention
2 x 2 x d_model x S / 2 per token per layer (causal), the LM head 2 x d_model x vocab per token; vision tower
2 x (linear weights) per patch (its windowed attention scores are left out, a few % of the vision FLOPs).
MFU = counted FLOP/s / the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s; override with --peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

QWEN25_VL_3B = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    "tie_word_embeddings": True,
}
TINY = {
    "text": {
        "vocab_size": 2048,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": 2026,
        "eos_token_id": 2028,
    },
    "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": 128},
    "tie_word_embeddings": False,
}
SHAPES = {"3b": QWEN25_VL_3B, "tiny": TINY}
PATCH, MERGE, TEMPORAL = 14, 2, 2


def write_config(shape: dict[str, Any], directory: Path) -> Path:
    """A config-only HF checkpoint directory (the bridge builds the model from it; no weights are read)."""
    from transformers import Qwen2_5_VLConfig

    vocab = shape["text"]["vocab_size"]
    special = {  # Qwen's ids for the real vocabulary; the top of the vocabulary for the tiny one
        "image_token_id": 151655 if vocab > 151655 else vocab - 10,
        "video_token_id": 151656 if vocab > 151656 else vocab - 9,
        "vision_start_token_id": 151652 if vocab > 151652 else vocab - 13,
        "vision_end_token_id": 151653 if vocab > 151653 else vocab - 12,
    }
    vision = {**shape["vision"], "patch_size": PATCH, "spatial_merge_size": MERGE, "temporal_patch_size": TEMPORAL}
    config = Qwen2_5_VLConfig(
        text_config=shape["text"], vision_config=vision, tie_word_embeddings=shape["tie_word_embeddings"], **special
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.save_pretrained(directory)
    return directory


def make_micro_batches(config: dict, args: argparse.Namespace) -> list[Any]:
    """Micro-batches of full-length samples, each with one image of image_size^2 pixels at the prompt start."""
    from nemo_spatial.batch import MicroBatch, PolicyBatch

    grid = args.image_size // PATCH
    image_tokens = (grid // MERGE) ** 2
    # Text tokens stay below the vision special tokens (a stray video token would need a video grid).
    text_ids = min(config[key] for key in ("image_token_id", "video_token_id", "vision_start_token_id"))
    micro_batches = []
    for index in range(args.micro_batches):
        size = args.micro_batch_size
        input_ids = torch.randint(0, text_ids, (size, args.seq_len))
        input_ids[:, 1] = config["vision_start_token_id"]
        input_ids[:, 2 : 2 + image_tokens] = config["image_token_id"]
        input_ids[:, 2 + image_tokens] = config["vision_end_token_id"]
        mask = torch.ones(size, args.seq_len, dtype=torch.bool)
        response = mask.clone()
        response[:, : 3 + image_tokens] = False
        batch = PolicyBatch(
            input_ids=input_ids,
            attention_mask=mask,
            response_mask=response,
            pixel_values=torch.randn(size * grid * grid, 3 * TEMPORAL * PATCH * PATCH),
            image_grid_thw=torch.tensor([[1, grid, grid]] * size),
        )
        micro_batches.append(MicroBatch(batch=batch, rows=torch.arange(size) + index * size))
    return micro_batches


def step_flops(config: dict, args: argparse.Namespace) -> float:
    """FLOPs of one forward + backward over all micro-batches (see the module docstring)."""
    text, vision = config["text_config"], config["vision_config"]
    d, layers, ffn, vocab = (
        text["hidden_size"],
        text["num_hidden_layers"],
        text["intermediate_size"],
        text["vocab_size"],
    )
    heads, kv_heads = text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = d // heads
    linear_per_layer = d * (heads * head_dim) + 2 * d * (kv_heads * head_dim) + (heads * head_dim) * d + 3 * d * ffn
    attention_per_token = 2 * 2 * d * args.seq_len / 2 * layers
    text_forward = 2 * linear_per_layer * layers + attention_per_token + 2 * d * vocab
    vd, vffn, depth = vision["hidden_size"], vision["intermediate_size"], vision["depth"]
    vision_linear = depth * (4 * vd * vd + 3 * vd * vffn) + (vd * MERGE * MERGE) ** 2 + vd * MERGE * MERGE * d
    vision_linear += 3 * TEMPORAL * PATCH * PATCH * vd
    tokens = args.micro_batches * args.micro_batch_size * args.seq_len
    patches = args.micro_batches * args.micro_batch_size * (args.image_size // PATCH) ** 2
    return 3.0 * (text_forward * tokens + 2 * vision_linear * patches)


def run(args: argparse.Namespace, model_dir: Path) -> dict[str, float]:
    from megatron.core.utils import get_model_config

    from nemo_spatial.models.qwen25_vl.bridge import load_model
    from nemo_spatial.models.qwen25_vl.config import FP8Config, PolicyConfig
    from nemo_spatial.models.qwen25_vl.forward import run_schedule
    from nemo_spatial.models.qwen25_vl.optimizer import ddp_config, install_grad_hooks
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig
    from nemo_spatial.parallel.state import initialize

    gpu = torch.cuda.is_available()
    fp8 = FP8Config(enabled=args.fp8 is not None, recipe=args.fp8 or "tensorwise")
    cfg = PolicyConfig(
        hf_path=str(model_dir), precision="bf16" if gpu else "fp32", max_seq_length=args.seq_len, fp8=fp8
    )
    cpu_compat.activate(ParallelConfig())  # no-op on a GPU with Transformer Engine; the CPU mode elsewhere
    state = initialize(ParallelConfig())
    loaded = load_model(cfg, state.layout, ddp_config(cfg.optimizer), load_weights=False)
    chunks = loaded.chunks
    install_grad_hooks(chunks, get_model_config(chunks[0]))
    config = json.loads((model_dir / "config.json").read_text())
    micro_batches = make_micro_batches(config, args)
    for mb in micro_batches:  # on the GPU before timing (the policy moves each micro-batch as it runs it)
        mb.batch = mb.batch.to(state.device)

    def compute(mb: Any, log_probs: torch.Tensor, entropy: torch.Tensor) -> tuple[torch.Tensor, dict]:
        mask = mb.batch.response_mask
        return -(log_probs * mask).sum() / mask.sum() / len(micro_batches), {}

    times = []
    for step in range(args.warmup + args.steps):
        for chunk in chunks:
            chunk.zero_grad_buffer()
        _synchronize()
        started = time.perf_counter()
        run_schedule(chunks, micro_batches, compute=compute, forward_only=False)
        _synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    tokens = args.micro_batches * args.micro_batch_size * args.seq_len
    return {
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "tflops": step_flops(config, args) / seconds / 1e12,
        "max_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan"),
    }


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="3b")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=448, help="pixels per side (a multiple of 28)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fp8", choices=["delayed", "tensorwise", "blockwise"], default=None)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM)")
    args = parser.parse_args()
    if args.image_size % (PATCH * MERGE):
        parser.error(f"--image-size {args.image_size} must be a multiple of {PATCH * MERGE}")
    from nemo_spatial.parallel.launch import spawn

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_config(SHAPES[args.shape], Path(tmp))
        result = spawn(_worker, nprocs=1, args=(args, str(model_dir)))[0]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run: MFU not meaningful)"
    precision = f"fp8 {args.fp8}" if args.fp8 else ("bf16" if torch.cuda.is_available() else "fp32")
    print(f"Qwen2.5-VL-{args.shape} shape, random weights, {precision}, {device}")
    print(
        f"{args.micro_batches} micro-batches x {args.micro_batch_size} x {args.seq_len} tokens, one "
        f"{args.image_size}x{args.image_size} image per sample"
    )
    mfu = result["tflops"] / args.peak_tflops if torch.cuda.is_available() else float("nan")
    print(
        f"forward+backward {result['seconds']:.3f} s | {result['tokens_per_s']:.0f} tokens/s | "
        f"{result['tflops']:.1f} TFLOP/s | MFU {mfu:.1%} | peak memory {result['max_memory_gb']:.1f} GiB"
    )


def _worker(rank: int, args: argparse.Namespace, model_dir: str) -> dict[str, float]:
    return run(args, Path(model_dir))


if __name__ == "__main__":
    main()
