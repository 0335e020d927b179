"""Export throughput: `tools/megatron_to_hf.py` on a checkpoint of the tiny model and of a wider one, timed.

    python benchmarks/export_throughput.py [--layers 4]

For each model: a one-process trainer-layout run (MegatronPolicy at TP=1, checkpointed as the trainer does),
then the real command in a fresh process, once per dtype. Prints the output size, the conversion + write time
(tensors gathered by Megatron-Bridge, cast, written as safetensors), the checkpoint build + load time, the whole
command's wall time, and the bytes/s of the conversion. The "wide" model has Qwen2.5-0.5B's layer shapes
(hidden 896, MLP 4,864) with `--layers` layers, so its tensors are of a realistic size while it fits in a few
GB of memory; the 3B / 7B estimates divide their bf16 sizes (3.75 B and 8.29 B parameters, vision included)
by its measured bytes/s, and scale the load time by parameter count.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nemo_spatial.models.tiny import TINY, TinyShape, build_tiny_qwen25_vl  # noqa: E402
from nemo_spatial.parallel.launch import spawn  # noqa: E402

BILLION_PARAMS = {"Qwen2.5-VL-3B": 3.75, "Qwen2.5-VL-7B": 8.29}
WROTE = re.compile(
    r"wrote .*: (\d+) tensors, ([\d.]+) (\w+) in ([\d.]+) s .*checkpoint load ([\d.]+) s, total ([\d.]+) s"
)
UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def make_run(rank: int, model_dir: str, run_dir: str) -> int:
    """A run directory with one checkpoint of the model at TP=1 (the weights as built)."""
    from nemo_spatial.checkpoint import TrainerState, save_checkpoint
    from nemo_spatial.config import load_config, write_run_metadata
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel import cpu_compat

    overrides = [f"policy.hf_path={model_dir}", "policy.reference=none", "policy.max_seq_length=256"]
    cfg = load_config(REPO / "conf" / "debug" / "tiny_cpu.yaml", overrides)
    cpu_compat.activate(cfg.parallel)
    policy = MegatronPolicy(cfg.policy, cfg.parallel, seed=1)
    write_run_metadata(cfg, Path(run_dir))
    save_checkpoint(Path(run_dir), TrainerState(step=1), lambda target: policy.save_checkpoint(str(target)))
    return sum(p.numel() for chunk in policy.chunks for p in chunk.parameters())


def export(run_dir: Path, out: Path, dtype: str) -> dict[str, float]:
    command = [sys.executable, "tools/megatron_to_hf.py", "--checkpoint", str(run_dir), "--out", str(out),
               "--dtype", dtype, "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    match = WROTE.search(done.stdout)
    assert match, done.stdout + done.stderr[-2000:]
    nbytes = float(match.group(2)) * UNITS[match.group(3)]
    return {"bytes": nbytes, "convert_s": float(match.group(4)), "load_s": float(match.group(5)), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="layers of the wide model")
    args = parser.parse_args()
    wide = TinyShape(hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers, num_attention_heads=14)
    shapes = {"tiny": TINY, f"wide-{args.layers}l": wide}
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        for name, shape in shapes.items():
            model = build_tiny_qwen25_vl(Path(tmp) / f"{name}-model", shape=shape)
            run_dir = Path(tmp) / f"{name}-run"
            params = spawn(make_run, nprocs=1, args=(str(model), str(run_dir)))[0]
            for dtype in ("float32", "bfloat16"):
                r = export(run_dir, Path(tmp) / f"{name}-{dtype}", dtype)
                rate = r["bytes"] / max(r["convert_s"], 1e-9)
                print(f"{name} ({params / 1e6:.1f} M params) {dtype}: {r['bytes'] / 1e6:.1f} MB, convert+write "
                      f"{r['convert_s']:.2f} s ({rate / 1e6:.0f} MB/s), build+load {r['load_s']:.1f} s, "
                      f"command {r['wall_s']:.1f} s")  # fmt: skip
            if name != "tiny":
                for model_name, billions in BILLION_PARAMS.items():
                    size = billions * 1e9 * 2
                    load = r["load_s"] * billions * 1e9 / params
                    print(f"  estimate {model_name} bf16: {size / 1e9:.1f} GB, convert+write ~{size / rate:.0f} s, "
                          f"build+load ~{load:.0f} s (scaled by parameters)")  # fmt: skip


if __name__ == "__main__":
    main()
