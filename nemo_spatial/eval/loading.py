"""Benchmark rows -> `Sample`s: from `--data-dir` (the hub's parquet layout) or from the hub via `datasets`.

Where a benchmark's files are looked for, in order:
1. `DIR/<key>/`, then `DIR/<owner>/<name>/` (what `huggingface-cli download --repo-type dataset ID --local-dir`
   writes). Inside it, the parquet files of the config and split: from the `configs:` block of the dataset
   card's YAML (README.md) when it names them, else the hub's conventional names (`<config>/<split>-*.parquet`,
   `data/<split>-*.parquet`, `<split>-*.parquet`, `<split>/*.parquet`, any `*<split>*.parquet`).
2. With no `--data-dir`: `datasets.load_dataset(hub_id, config, split=...)`. When that fails (offline, gated),
   one `UserError` names the dataset and the download command.
A missing column is one error that names the column, the file and the columns there. Rows keep their order
(MMVP pairs and 3DSRBench-Full view pairs depend on it); a row's images are decoded only when prompted.
"""

from __future__ import annotations

import ast
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_spatial.errors import UserError
from nemo_spatial.eval.benchmarks import HALLUSION, HALLUSION_OPTIONS, Benchmark
from nemo_spatial.eval.metrics import mindcube_setting

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One benchmark question. `answer` is the gold exactly as stored; `choices` the option texts or None."""

    benchmark: str
    sample_id: str
    task: str | None
    question: str
    answer: str
    choices: list[str] | None
    images: list[Any]  # raw column values (bytes dicts, PIL images, base64 text); decoded by prompts.py
    row: int
    meta: dict[str, Any] = field(default_factory=dict)


def load_samples(bench: Benchmark, data_dir: Path | None) -> list[Sample]:
    rows, source = load_rows(bench, data_dir)
    return [to_sample(bench, row, index, source) for index, row in enumerate(rows)]


def load_rows(bench: Benchmark, data_dir: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The rows (dicts) and a name for where they came from (for error messages)."""
    if data_dir is not None:
        root = _local_root(bench, data_dir)
        files = parquet_files(root, bench.config, bench.split)
        return _read_parquet(bench, files), str(files[0]) if len(files) == 1 else f"{root} ({len(files)} files)"
    return _from_hub(bench), f"{bench.hub_id} ({bench.config or 'default'}/{bench.split})"


def _local_root(bench: Benchmark, data_dir: Path) -> Path:
    candidates = [data_dir / bench.key, data_dir / bench.hub_id]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UserError(
        f"no local copy of {bench.key} ({bench.hub_id}) under --data-dir {data_dir}: looked for "
        f"{' and '.join(str(c) for c in candidates)}; download it with: "
        f"{bench.download_command().replace('DIR', str(data_dir))}"
    )


def parquet_files(root: Path, config: str | None, split: str) -> list[Path]:
    """The parquet files of one config and split in a local copy of a hub dataset repository."""
    from_card = _card_files(root, config, split)
    if from_card:
        return from_card
    patterns = [f"{split}-*.parquet", f"{split}/*.parquet", f"data/{split}-*.parquet", f"data/{split}/*.parquet"]
    if config:
        patterns = [f"{config}/{split}-*.parquet", f"{config}/{split}/*.parquet", *patterns]
    patterns.append(f"**/*{split}*.parquet")
    for pattern in patterns:
        found = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True))
        if found:
            return found
    present = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    raise UserError(
        f"no parquet files for config {config or 'default'!r}, split {split!r} in {root}: tried "
        f"{', '.join(patterns)}; files there: {', '.join(present[:20]) or 'none'}"
    )


def _card_files(root: Path, config: str | None, split: str) -> list[Path]:
    """Files the dataset card's `configs:` YAML names for this config and split (empty when it names none)."""
    import yaml

    card = root / "README.md"
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return []
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return []
    for entry in header.get("configs", []) if isinstance(header, dict) else []:
        if not isinstance(entry, dict) or entry.get("config_name", "default") != (config or "default"):
            continue
        for files in entry.get("data_files", []):
            if isinstance(files, dict) and files.get("split") == split:
                paths = files.get("path", [])
                patterns = [paths] if isinstance(paths, str) else list(paths)
                return sorted(Path(p) for pattern in patterns for p in glob.glob(str(root / pattern), recursive=True))
    return []


def _read_parquet(bench: Benchmark, files: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise UserError(f"cannot read {path} ({bench.key}): {error}") from None
        check_columns(bench, table.column_names, str(path))
        rows.extend(table.select(list(bench.columns + _optional(bench, table.column_names))).to_pylist())
    return rows


def _optional(bench: Benchmark, present: list[str]) -> tuple[str, ...]:
    return (bench.id_column,) if bench.id_column and bench.id_column in present else ()


def check_columns(bench: Benchmark, present: list[str], where: str) -> None:
    missing = [c for c in bench.columns if c not in present]
    if missing:
        raise UserError(
            f"{bench.key}: column {', '.join(repr(c) for c in missing)} is not in {where}; "
            f"columns there: {', '.join(present)}"
        )


def _from_hub(bench: Benchmark) -> list[dict[str, Any]]:
    import datasets

    try:
        data = datasets.load_dataset(bench.hub_id, bench.config, split=bench.split)
    except Exception as error:  # noqa: BLE001 - offline, gated, missing: all mean "get a local copy"
        raise UserError(
            f"cannot load {bench.key} from the hub ({bench.hub_id}, config {bench.config or 'default'}, split "
            f"{bench.split}): {type(error).__name__}: {str(error)[:300]}. Download it with: "
            f"{bench.download_command()} and pass --data-dir DIR"
        ) from None
    check_columns(bench, list(data.column_names), bench.hub_id)
    return [dict(row) for row in data]


def to_sample(bench: Benchmark, row: dict[str, Any], index: int, source: str) -> Sample:
    images: list[Any] = []
    for column in bench.images:
        value = row[column]
        if isinstance(value, list):
            images.extend(v for v in value if v is not None)
        elif value is not None:
            images.append(value)
    choices = _choices(bench, row.get(bench.choices) if bench.choices else None, index, source)
    raw_id = row.get(bench.id_column) if bench.id_column else None
    task = row.get(bench.task) if bench.task else None
    if task is None and bench.metric == "mindcube_setting" and raw_id is not None:
        task = mindcube_setting(str(raw_id))  # MindCube's setting is the id's prefix
    meta = {c: _plain(row.get(c)) for c in bench.extra_columns}
    return Sample(
        benchmark=bench.key,
        sample_id=str(raw_id) if raw_id is not None else f"{bench.key}-{index}",
        task=str(task) if task is not None else None,
        question=str(row[bench.question] or ""),
        answer=str(row[bench.answer]) if row[bench.answer] is not None else "",
        choices=list(HALLUSION_OPTIONS) if bench.gold_form == HALLUSION else choices,
        images=images,
        row=index,
        meta=meta,
    )


def _choices(bench: Benchmark, value: Any, index: int, source: str) -> list[str] | None:
    """Option texts: a list, or a string holding one (SpatialReasonerEval); `(A) text` loses its prefix."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise UserError(
                f"{bench.key}: row {index} of {source}: column {bench.choices!r} holds {value[:80]!r}, "
                "which is neither a list nor a string of a Python list"
            ) from None
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{bench.key}: row {index} of {source}: column {bench.choices!r} is a {type(value).__name__}")
    texts = [str(v) for v in value]
    if bench.options_prefixed:
        texts = [_strip_option_prefix(t) for t in texts]
    return texts


def _strip_option_prefix(text: str) -> str:
    stripped = text.strip()
    if len(stripped) >= 3 and stripped[0] == "(" and stripped[2] == ")" and stripped[1].isalpha():
        return stripped[3:].strip()
    return stripped


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
