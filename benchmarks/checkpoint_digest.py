"""What the checkpoint manifest costs: BLAKE3 digest throughput (memory-mapped file, one thread and all cores)
and the time that means for a Qwen2.5-VL-7B checkpoint with its optimizer state.

    python benchmarks/checkpoint_digest.py [--gb 1.0]

A 7B checkpoint as the policy saves it in bf16 training: bf16 weights (2 bytes a parameter) plus the distributed
optimizer's fp32 main weights and two Adam moments (12 bytes): ~14 bytes x 8.3e9 parameters = ~116 GB. The file
is read from the page cache (it was just written), so this is the hash's own cost; a cold read from disk is
bounded by the disk's bandwidth instead.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import zlib
from pathlib import Path

import blake3

QWEN25_VL_7B_PARAMETERS = 8.3e9
BYTES_PER_PARAMETER = 14  # bf16 weights + fp32 main weights + two fp32 Adam moments


def _throughput(path: Path, threads: int) -> float:
    start = time.perf_counter()
    hasher = blake3.blake3(max_threads=threads)
    hasher.update_mmap(str(path))
    hasher.hexdigest()
    return path.stat().st_size / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the file hashed")
    args = parser.parse_args()
    size = int(args.gb * 1e9)
    checkpoint_gb = QWEN25_VL_7B_PARAMETERS * BYTES_PER_PARAMETER / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shard"
        chunk = os.urandom(1 << 24)
        with path.open("wb") as handle:
            for _ in range(max(1, size // len(chunk))):
                handle.write(chunk)
        _throughput(path, 1)  # warm the page cache
        rows = [("blake3, 1 thread", _throughput(path, 1)), (f"blake3, {os.cpu_count()} cores", _throughput(path, -1))]
        data = path.read_bytes()
        start = time.perf_counter()
        zlib.crc32(data)
        rows.append(("crc32 (zlib), 1 thread, for comparison", len(data) / (time.perf_counter() - start) / 1e9))
    print(f"file {size / 1e9:.2f} GB; 7B checkpoint ~{checkpoint_gb:.0f} GB")
    for name, gb_per_s in rows:
        print(f"{name:40s} {gb_per_s:6.2f} GB/s   7B checkpoint: {checkpoint_gb / gb_per_s:6.1f} s")


if __name__ == "__main__":
    main()
