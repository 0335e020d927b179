"""Command line for the rewards.

    python -m nemo_spatial.reward score --preset spatialthinker --input IN.jsonl --output OUT.jsonl
    python -m nemo_spatial.reward demo [--config conf/base.yaml] [key=value ...]

`score` reads lines `{"response", "ground_truth", "problem"}` and writes each line back with
`"reward": {overall, format, count, accuracy, spatial}` and `"error"` (null when fine). A line that is not
UTF-8, not JSON or lacks a field is written with its line number in `"error"` and zero reward; every other
line is still scored. Exit status 1 when any line had an error (a summary goes to stderr), else 0.

Input and output: `--input -` (or /dev/stdin) reads standard input, `--output -` writes standard output. A file
output is written to a temporary sibling and renamed over OUT at the end (nemo_spatial.fileio), so an
interrupted run leaves no half-written file that looks complete; an output that is the input (the same file,
also through a symbolic or hard link) is refused before anything is written, as is a directory on either side
(exit status 2, one line; `--verbose` for the traceback). `--upstream-exact` gives upstream's numbers exactly
(reward.upstream_exact: a matched pair's mciou is not floored at 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from nemo_spatial.cli import add_verbose_flag, run_main
from nemo_spatial.errors import UserError
from nemo_spatial.fileio import atomic_write
from nemo_spatial.reward.batch import COMPONENTS, PRESETS, RewardResult, RewardSample, RewardScorer
from nemo_spatial.reward.similarity import make_similarity

FIELDS = ("response", "ground_truth", "problem")
CHUNK = 1024

Line = str | UnicodeDecodeError  # a line's text, or why it is not UTF-8


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "score":
        # A factory: the paths are checked before the similarity backend (spaCy: seconds) is loaded.
        return score_file(
            args.input, args.output, lambda: RewardScorer(args.preset, args.similarity, args.upstream_exact)
        )
    return demo(args.config, args.overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.reward", description=__doc__.split("\n\n")[0])
    add_verbose_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a JSONL file of responses")
    score.add_argument("--preset", choices=PRESETS, default="spatialthinker")
    score.add_argument("--similarity", choices=("auto", "spacy", "trigram"), default="auto")
    score.add_argument(
        "--upstream-exact",
        action="store_true",
        help="upstream's value exactly: a matched pair's mciou is not floored at 0 (reward.upstream_exact)",
    )
    score.add_argument("--input", required=True, help="JSONL with response, ground_truth, problem ('-': stdin)")
    score.add_argument("--output", required=True, help="JSONL written with reward and error ('-': stdout)")
    add_verbose_flag(score)
    demo_cmd = commands.add_parser("demo", help="score the reward spec's worked examples and record the run")
    demo_cmd.add_argument("--config", default="conf/base.yaml")
    demo_cmd.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser


def score_file(
    input_path: str | Path, output_path: str | Path, scorer: RewardScorer | Callable[[], RewardScorer]
) -> int:
    """Score every line of `input_path` into `output_path` ('-' for stdin/stdout); returns the exit status.

    Raises UserError (before writing anything) for a missing or directory input, a directory output, or an
    output that is the input.
    """
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open_input(str(input_path)))
        sink = stack.enter_context(_open_output(str(output_path), os.fstat(source.fileno())))
        bad_lines = _score_stream(source, sink, scorer if isinstance(scorer, RewardScorer) else scorer())
    if bad_lines:
        shown = ", ".join(map(str, bad_lines[:20])) + (" ..." if len(bad_lines) > 20 else "")
        print(f"{len(bad_lines)} line(s) had errors (scored 0, see 'error'): lines {shown}", file=sys.stderr)
        return 1
    return 0


def _score_stream(source: IO[bytes], sink: IO[str], scorer: RewardScorer) -> list[int]:
    bad_lines: list[int] = []
    # Bytes, decoded line by line: a line that is not UTF-8 is that line's error, not replacement characters
    # that would be scored as if the policy had written them.
    for chunk in _chunks(tqdm(source, desc="scoring", unit=" lines", disable=None)):
        for line_no, record, result in _score_chunk(chunk, scorer):
            if result.error is not None:
                bad_lines.append(line_no)
            sink.write(json.dumps({**record, "reward": result.components(), "error": result.error}) + "\n")
    return bad_lines


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    path = Path(name)
    if not path.exists():
        raise UserError(f"input file {path} does not exist (--input)")
    if path.is_dir():
        raise UserError(f"--input {path} is a directory; give a JSONL file (or '-' for standard input)")
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UserError(f"cannot read --input {path}: {error.strerror}") from None
    with handle:
        yield handle


@contextlib.contextmanager
def _open_output(name: str, source: os.stat_result) -> Iterator[IO[str]]:
    """The output stream: stdout, a device or pipe written in place, or a regular file written atomically."""
    if name == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(os.path.realpath(name))  # through a symbolic link: replace its target, not the link
    try:
        existing: os.stat_result | None = path.stat()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise UserError(f"--output {name} is a directory; give a file path (or '-' for standard output)")
        if (existing.st_dev, existing.st_ino) == (source.st_dev, source.st_ino):
            raise UserError(
                f"--output {name} is the input file (the same file{' through a link' if name != str(path) else ''}); "
                "scoring it in place would destroy it: write to another path"
            )
        if not stat.S_ISREG(existing.st_mode):  # /dev/stdout, a named pipe: no sibling to rename over it
            with path.open("w") as stream:
                yield stream
            return
    if path.parent.is_file():
        raise UserError(f"--output {name}: {path.parent} is a file, not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        yield handle


def _chunks(lines: Iterable[bytes]) -> Iterator[list[tuple[int, Line]]]:
    chunk: list[tuple[int, Line]] = []
    for line_no, raw in enumerate(lines, start=1):
        line = _decode(raw)
        if isinstance(line, UnicodeDecodeError) or line.strip():
            chunk.append((line_no, line))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode(raw: bytes) -> Line:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return error


def _score_chunk(
    chunk: list[tuple[int, Line]], scorer: RewardScorer
) -> Iterator[tuple[int, dict[str, Any], RewardResult]]:
    for line_no, line in chunk:
        record, problem = _parse_line(line)
        if problem is not None:
            zero = RewardResult(0.0, 0.0, 0.0, 0.0, 0.0, error=f"line {line_no}: {problem}")
            yield line_no, record or {"line": line_no}, zero
            continue
        result = scorer.score_one(RewardSample(*(record[name] for name in FIELDS)))
        if result.error is not None:
            result = RewardResult(**result.components(), error=f"line {line_no}: {result.error}")
        yield line_no, record, result


def _parse_line(line: Line) -> tuple[dict[str, Any], str | None]:
    if isinstance(line, UnicodeDecodeError):
        return {}, f"not valid UTF-8 ({line})"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as error:
        return {}, f"not valid JSON ({error})"
    if not isinstance(record, dict):
        return {}, "not a JSON object"
    missing = [name for name in FIELDS if name not in record]
    if missing:
        return record, f"missing field(s) {', '.join(missing)}"
    return record, None


def demo(config_path: str, overrides: list[str]) -> int:
    """Score the worked examples with the configured preset, print a table, record the run."""
    from nemo_spatial.config import load_config, write_run_metadata
    from nemo_spatial.reward.examples import worked_samples

    cfg = load_config(config_path, overrides)
    run_dir = write_run_metadata(cfg)
    similarity = make_similarity(cfg.reward.similarity, cfg.reward.similarity_model)
    scorer = RewardScorer(cfg.reward.preset, similarity, upstream_exact=cfg.reward.upstream_exact)
    samples = worked_samples()
    batch = scorer.score_batch(samples.values())
    print(f"preset {cfg.reward.preset}, label similarity {scorer.similarity.name}")
    print(f"{'example':45s} " + " ".join(f"{name:>8s}" for name in COMPONENTS))
    with atomic_write(run_dir / "rewards.jsonl") as sink:
        for name, result in zip(samples, batch.results, strict=True):
            print(f"{name:45s} " + " ".join(f"{value:8.4f}" for value in result.components().values()))
            sink.write(json.dumps({"example": name, "reward": result.components(), "error": result.error}) + "\n")
    print(f"wrote {run_dir}/rewards.jsonl, config.yaml, run_info.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
