"""Export a run's Megatron checkpoint as a Hugging Face model directory (transformers, vLLM, the eval command).

    python tools/megatron_to_hf.py --checkpoint RUN/checkpoints/step_N [--out DIR] [--dtype bfloat16|float32]
                                   [--check] [--base DIR] [--nproc N] [--overwrite]
    python tools/megatron_to_hf.py --checkpoint RUN          # the run's latest complete checkpoint
    python tools/megatron_to_hf.py --checkpoint CKPT --out DIR --check-only   # compare an existing export

This file only parses arguments and runs the checks that need no model (nemo_spatial.export.source); the
conversion is nemo_spatial.models.qwen25_vl.hf_export, imported when it runs. Exit status: 0 done, 1 when
--check finds the logits further apart than its tolerance, 2 on a user error (one line: what and the fix).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, as `python -m` would have it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nemo_spatial.cli import add_verbose_flag, run_main
from nemo_spatial.errors import UserError
from nemo_spatial.export.files import DEFAULT_SHARD_BYTES, DTYPES, base_dtype, base_weights, folder_bytes
from nemo_spatial.export.source import (
    check_free_space,
    check_output,
    default_output,
    human_bytes,
    resolve_source,
)

CHECK_FAILED_STATUS = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="RUN/checkpoints/step_N, or RUN for its latest checkpoint")
    p.add_argument("--out", help="output directory (default: RUN/hf/step_N)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weights dtype (default: the base model's)")
    p.add_argument("--base", help="the base HF model (default: policy.hf_path from the run's config.yaml)")
    p.add_argument("--check", action="store_true", help="compare the export with the checkpoint (logits, greedy)")
    p.add_argument("--check-only", action="store_true", help="only compare an existing --out with the checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (once the new one is written)")
    p.add_argument("--nproc", type=int, default=1, help="processes (tensor parallel) to hold a model too big for one")
    p.add_argument("--max-shard-gb", type=float, default=DEFAULT_SHARD_BYTES / 1e9, help="safetensors shard size")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose_flag(p)
    return p


def _quiet() -> None:
    """Megatron's and transformers' INFO lines and library warnings hide the few lines this command prints."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    for name in ("megatron", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.verbose:
        _quiet()
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc} must be at least 1")
    source = resolve_source(args.checkpoint, args.base)
    out = Path(args.out) if args.out else default_output(source)
    dtype = args.dtype or base_dtype(source.base)
    if args.check_only:
        if not (out / "config.json").is_file():
            raise UserError(
                f"--check-only: {out} is not an export (no config.json); export it first (drop --check-only)"
            )
    else:
        check_output(out, args.overwrite)
        check_free_space(out, base_weights(source.base).nbytes(dtype))
    layout = source.layout
    print(
        f"checkpoint {source.checkpoint} (step {source.step}, saved at TP={layout['tensor']} PP={layout['pipeline']} "
        f"DP={layout['data']}), base {source.base} -> {out} ({dtype})",
        file=sys.stderr,
    )
    from nemo_spatial.models.qwen25_vl.hf_export import ExportRequest, export_worker

    command = ("python", "tools/megatron_to_hf.py", *(argv if argv is not None else sys.argv[1:]))
    request = ExportRequest(
        source=source, out=out, dtype=dtype, overwrite=args.overwrite, check=args.check, check_only=args.check_only,
        max_shard_bytes=int(args.max_shard_gb * 1e9), command=command, show_progress=not args.no_progress,
    )  # fmt: skip
    started = time.perf_counter()
    if args.nproc == 1:
        result = export_worker(0, request)
    else:
        from nemo_spatial.parallel.launch import spawn

        result = spawn(export_worker, nprocs=args.nproc, args=(request,))[0]
    assert result is not None
    if not args.check_only:
        size = folder_bytes(out)
        print(
            f"wrote {out}: {result.tensors} tensors, {human_bytes(size)} in {result.seconds:.1f} s "
            f"({human_bytes(size / max(result.seconds, 1e-9))}/s; checkpoint load {result.load_seconds:.1f} s, "
            f"total {time.perf_counter() - started:.1f} s)"
        )
    if result.check is not None:
        print(result.check.summary())
        return 0 if result.check.passed else CHECK_FAILED_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
