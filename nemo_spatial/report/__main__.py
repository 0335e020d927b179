"""`python -m nemo_spatial.report RUN_DIR`: plots, rollout pages and report.md of a training run, on demand.

RUN_DIR may also be an eval run (a folder with samples.jsonl, or the file itself): then the eval viewer,
one page per benchmark under `<dir>/viewer/`, wrong answers first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nemo_spatial.cli import add_verbose_flag, run_main
from nemo_spatial.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run's directory, or an eval run's (samples.jsonl)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    path: Path = args.run_dir
    samples = path if path.is_file() else path / "samples.jsonl"
    if samples.is_file() and samples.suffix == ".jsonl" and not (path / "metrics.jsonl").exists():
        from nemo_spatial.report.eval_view import render_eval

        pages = render_eval(samples, samples.parent / "viewer")
        print(f"eval viewer: {pages[-1]} ({len(pages) - 1} benchmark page(s))")
        return 0
    if not (path / "metrics.jsonl").is_file() and not (path / "rollouts").is_dir():
        raise UserError(
            f"{path} holds neither metrics.jsonl nor rollouts/ (a training run) nor samples.jsonl (an eval run); "
            "pass a run directory such as outputs/tiny-cpu"
        )
    from nemo_spatial.report import finish_run

    finish_run(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
