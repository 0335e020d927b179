"""Command line for the rewards.

    python -m nemo_spatial.reward score --preset spatialthinker --input IN.jsonl --output OUT.jsonl
    python -m nemo_spatial.reward demo [--config conf/base.yaml] [key=value ...]

`score` reads lines `{"response", "ground_truth", "problem"}` and writes each line back with
`"reward": {overall, format, count, accuracy, spatial}` and `"error"` (null when fine). A line that is not
UTF-8, not JSON or lacks a field is written with its line number in `"error"` and zero reward; every other
line is still scored. Exit status 1 when any line had an error (a summary goes to stderr), else 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nemo_spatial.reward.batch import COMPONENTS, PRESETS, RewardResult, RewardSample, RewardScorer
from nemo_spatial.reward.similarity import make_similarity

FIELDS = ("response", "ground_truth", "problem")
CHUNK = 1024

Line = str | UnicodeDecodeError  # a line's text, or why it is not UTF-8


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "score":
        return score_file(args.input, args.output, RewardScorer(args.preset, args.similarity))
    return demo(args.config, args.overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nemo_spatial.reward", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a JSONL file of responses")
    score.add_argument("--preset", choices=PRESETS, default="spatialthinker")
    score.add_argument("--similarity", choices=("auto", "spacy", "trigram"), default="auto")
    score.add_argument("--input", type=Path, required=True, help="JSONL with response, ground_truth, problem")
    score.add_argument("--output", type=Path, required=True, help="JSONL written with reward and error")
    demo_cmd = commands.add_parser("demo", help="score the reward spec's worked examples and record the run")
    demo_cmd.add_argument("--config", default="conf/base.yaml")
    demo_cmd.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser


def score_file(input_path: Path, output_path: Path, scorer: RewardScorer) -> int:
    """Score every line of `input_path` into `output_path`; returns the exit status."""
    if not input_path.is_file():
        print(f"error: input file {input_path} does not exist", file=sys.stderr)
        return 2
    output_path.parent.mkdir(parents=True, exist_ok=True)
    bad_lines: list[int] = []
    # Bytes, decoded line by line: a line that is not UTF-8 is that line's error, not replacement characters
    # that would be scored as if the policy had written them.
    with input_path.open("rb") as source, output_path.open("w") as sink:
        for chunk in _chunks(tqdm(source, desc="scoring", unit=" lines", disable=None)):
            for line_no, record, result in _score_chunk(chunk, scorer):
                if result.error is not None:
                    bad_lines.append(line_no)
                sink.write(json.dumps({**record, "reward": result.components(), "error": result.error}) + "\n")
    if bad_lines:
        shown = ", ".join(map(str, bad_lines[:20])) + (" ..." if len(bad_lines) > 20 else "")
        print(f"{len(bad_lines)} line(s) had errors (scored 0, see 'error'): lines {shown}", file=sys.stderr)
        return 1
    return 0


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
    scorer = RewardScorer(cfg.reward.preset, make_similarity(cfg.reward.similarity, cfg.reward.similarity_model))
    samples = worked_samples()
    batch = scorer.score_batch(samples.values())
    print(f"preset {cfg.reward.preset}, label similarity {scorer.similarity.name}")
    print(f"{'example':45s} " + " ".join(f"{name:>8s}" for name in COMPONENTS))
    with (run_dir / "rewards.jsonl").open("w") as sink:
        for name, result in zip(samples, batch.results, strict=True):
            print(f"{name:45s} " + " ".join(f"{value:8.4f}" for value in result.components().values()))
            sink.write(json.dumps({"example": name, "reward": result.components(), "error": result.error}) + "\n")
    print(f"wrote {run_dir}/rewards.jsonl, config.yaml, run_info.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
