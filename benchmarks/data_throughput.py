"""Prompt preprocessing throughput: images/s (and per core) through the full data path of the trainer.

    python benchmarks/data_throughput.py [--rows 96] [--workers 2] [--model DIR] [--data SPEC]

Measures PromptStream.next_batch, i.e. parquet row -> JPEG decode -> upstream min/max-pixel resize -> chat
template -> Qwen2.5-VL processor (patches, expanded image tokens), with upstream's pixel
bounds (min 512^2, max 2048^2). First in the calling process (num_workers=0: one core), then with worker
processes (after a warm-up batch, so worker start-up is not counted). Images per CPU-second (CPU time of the
trainer process and its workers) is the per-core rate on a machine shared with other work. Default data:
synthetic STVQA-format rows (320-512 x 256-384 images, scaled up to >= 512^2 like most of STVQA's Visual
Genome images); default processor: the tiny model's, whose image processor is Qwen2.5-VL's own (same patching
and normalisation; its small tokenizer makes the text part cheaper than Qwen's).
Pass --model with a real Qwen2.5-VL directory and --data with STVQA-7K for production figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import psutil
import torch

from nemo_spatial.data import DataConfig, PromptStream
from nemo_spatial.data.images import prepare_image
from nemo_spatial.models.tiny import build_tiny_qwen25_vl


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the data workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def _measure(cfg: DataConfig, model: str, rows: int, batch: int) -> tuple[float, float, float]:
    """(images per wall second, images per CPU second, mean prompt tokens) over `rows` samples after a warm-up."""
    stream = PromptStream.open(cfg, "train", processor_path=model)
    stream.next_batch(batch)  # warm-up: worker start, processor load, first-call caches
    start, cpu_start, tokens, seen = time.perf_counter(), _cpu_seconds(), 0, 0
    while seen < rows:
        samples = stream.next_batch(batch)
        seen += len(samples)
        tokens += sum(len(s.input_ids) for s in samples)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    stream.close()
    return seen / elapsed, seen / cpu, tokens / seen


def _stage_breakdown(cfg: DataConfig, model: str, n: int) -> dict[str, float]:
    """Milliseconds per sample in each stage, in this process."""
    stream = PromptStream.open(cfg, "train", processor_path=model)
    processor = stream.dataset.processor
    rows = [stream.dataset.rows[i : i + 1].to_pylist()[0] for i in range(n)]
    processor(0, rows[0])  # warm-up
    timings = {"decode+resize": 0.0, "whole sample (decode to processor outputs)": 0.0}
    for index, row in enumerate(rows):
        t0 = time.perf_counter()
        prepare_image(row[cfg.image_key], cfg.min_pixels, cfg.max_pixels)
        t1 = time.perf_counter()
        processor(index, row)
        t2 = time.perf_counter()
        timings["decode+resize"] += t1 - t0
        timings["whole sample (decode to processor outputs)"] += t2 - t1
    return {k: 1000 * v / n for k, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=96, help="samples timed per setting")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--model", default="", help="model directory (processor); default: the tiny model")
    parser.add_argument("--data", default="", help="data source spec; default: synthetic:<rows>")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_tiny_qwen25_vl(Path(tmp) / "tiny"))
        spec = args.data or f"synthetic:{args.rows}:0@train"
        base = {"train_files": spec, "val_files": spec, "cache_dir": str(Path(tmp) / "cache")}
        cores = len(os.sched_getaffinity(0))
        print(f"cores available: {cores}; load average at start: {os.getloadavg()[0]:.2f}")
        print(f"data: {spec}; processor: {model}")

        torch.set_num_threads(1)  # one core, like each worker process
        serial_cfg = DataConfig(**base, num_workers=0)
        breakdown = _stage_breakdown(serial_cfg, model, min(32, args.rows))
        print("per sample, one process: " + ", ".join(f"{k} {v:.1f} ms" for k, v in breakdown.items()))
        rate, per_cpu, tokens = _measure(serial_cfg, model, args.rows, args.batch)
        print(f"num_workers=0: {rate:.1f} images/s wall on 1 core; {per_cpu:.1f} images per CPU-second")
        print(f"  ({tokens:.0f} prompt tokens per sample)")

        parallel_cfg = DataConfig(**base, num_workers=args.workers)
        rate_p, per_cpu_p, _ = _measure(parallel_cfg, model, args.rows, args.batch)
        used = min(args.workers, cores)
        print(f"num_workers={args.workers}: {rate_p:.1f} images/s wall = {rate_p / used:.1f} per core ({used} cores);")
        print(f"  {per_cpu_p:.1f} images per CPU-second (trainer + workers; independent of other load)")
        print(f"load average at end: {os.getloadavg()[0]:.2f} (figures are lower when other work shares the cores)")


if __name__ == "__main__":
    main()
