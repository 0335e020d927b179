"""Where rows come from: a hub dataset, a local directory of parquet files, one parquet file, or synthetic data.

    rows = load_rows("hunarbatra/STVQA-7K@train", cfg)      # -> datasets.Dataset in arrow format
    rows = load_rows("/data/stvqa@val", cfg)                 # /data/stvqa/val-*.parquet (or data/val-*.parquet)
    rows = load_rows("/data/stvqa/train-00000-of-00001.parquet", cfg)
    rows = load_rows("synthetic:64@train", cfg)              # 64 rows, generated once into the cache, offline

Every source is schema-checked (schema.py) before rows are read: per file for parquet, on the loaded table
for the hub. Only the columns a run needs (and METADATA_COLUMNS when every file has them) are loaded.
Rows come back in `datasets`' arrow format: `rows[i:i+1].to_pylist()[0]` is a plain dict with the image
still encoded, so decoding happens in the data workers, not here.
A hub id without a reachable hub fails at once (no retry loop) with the commands to use a local copy.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from nemo_spatial.data.config import DataConfig
from nemo_spatial.data.schema import METADATA_COLUMNS, check_schema, required_columns

SYNTHETIC_PREFIX = "synthetic:"
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+$")


class DataSourceError(ValueError):
    """A data source that cannot be read; the message says what to change."""


@dataclass(frozen=True)
class Source:
    kind: str  # hub | dir | file | synthetic
    location: str
    split: str
    rows: int = 0  # synthetic only
    seed: int = 0  # synthetic only

    def __str__(self) -> str:
        return f"{self.location}@{self.split}" if self.kind != "file" else self.location


def parse_source(spec: str) -> Source:
    """Split `location@split` (split defaults to train) and tell which kind of source it names."""
    spec = spec.strip()
    if not spec:
        raise DataSourceError("empty data source; use a hub id (owner/name@split), a directory, or a .parquet file")
    location, split = spec, "train"
    head, sep, tail = spec.rpartition("@")
    if sep and head and _SPLIT.match(tail) and not Path(spec).exists():
        location, split = head, tail
    if location.startswith(SYNTHETIC_PREFIX):
        return _parse_synthetic(location, split)
    path = Path(location).expanduser()
    if path.is_dir():
        return Source("dir", str(path), split)
    if path.is_file():
        return Source("file", str(path), split)
    if location.endswith(".parquet") or location.startswith((".", "/", "~")) or location.count("/") != 1:
        raise DataSourceError(f"data source {spec!r}: {location} does not exist (and is not a hub id owner/name)")
    return Source("hub", location, split)


def _parse_synthetic(location: str, split: str) -> Source:
    parts = location[len(SYNTHETIC_PREFIX) :].split(":")
    try:
        rows = int(parts[0])
        seed = int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise DataSourceError(
            f"data source {location!r}: use synthetic:N or synthetic:N:SEED, e.g. synthetic:64@train"
        ) from None
    if rows < 1 or len(parts) > 2:
        raise DataSourceError(f"data source {location!r}: N must be >= 1 (synthetic:N[:SEED]@split)")
    return Source("synthetic", location, split, rows=rows, seed=seed)


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "nemo-spatial"


def parquet_files(source: Source, cfg: DataConfig) -> list[Path]:
    """The parquet files of a local or synthetic source (synthetic data is generated on first use)."""
    if source.kind == "file":
        return [Path(source.location)]
    if source.kind == "synthetic":
        from nemo_spatial.data.synth import ensure_synthetic

        try:
            directory = ensure_synthetic(cache_root(cfg) / "synthetic", source.split, source.rows, source.seed)
        except ValueError as error:
            raise DataSourceError(f"data source {source}: {error}") from None
    else:
        directory = Path(source.location)
    for folder in (directory, directory / "data"):
        files = sorted(folder.glob(f"{source.split}-*.parquet"))
        if files:
            return files
    found = sorted({p.name.split("-")[0] for p in [*directory.glob("*.parquet"), *directory.glob("data/*.parquet")]})
    raise DataSourceError(
        f"no {source.split}-*.parquet in {directory} (or {directory}/data); splits found: {', '.join(found) or 'none'}"
    )


def load_rows(spec: str, cfg: DataConfig) -> Any:
    """The rows of a source as a `datasets.Dataset` in arrow format, schema-checked."""
    source = parse_source(spec)
    if source.kind == "hub":
        return _load_hub(source, cfg)
    files = parquet_files(source, cfg)
    schemas = [(f, pq.read_schema(f)) for f in files]
    for file, schema in schemas:
        check_schema(schema, str(file), cfg)
    columns = _columns_to_load(cfg, [set(s.names) for _, s in schemas])
    import datasets

    rows = datasets.load_dataset(
        "parquet",
        data_files={source.split: [str(f) for f in files]},
        split=source.split,
        columns=columns,
        cache_dir=str(cache_root(cfg) / "datasets"),
    )
    return rows.with_format("arrow")


def _columns_to_load(cfg: DataConfig, per_file: list[set[str]]) -> list[str]:
    shared = set.intersection(*per_file)
    extra = [c for c in METADATA_COLUMNS if c in shared and c not in required_columns(cfg)]
    return required_columns(cfg) + extra


def _load_hub(source: Source, cfg: DataConfig) -> Any:
    import datasets

    if not _hub_offline() and not hub_reachable():
        raise DataSourceError(_offline_message(source, "the Hugging Face hub is not reachable from this machine"))
    try:
        rows = datasets.load_dataset(source.location, split=source.split, cache_dir=str(cache_root(cfg) / "datasets"))
    except (ConnectionError, OSError, ValueError, FileNotFoundError) as error:
        raise DataSourceError(_offline_message(source, f"{type(error).__name__}: {error}")) from None
    check_schema(rows.data.schema, f"hub dataset {source}", cfg)
    wanted = set(_columns_to_load(cfg, [set(rows.column_names)]))
    rows = rows.remove_columns([c for c in rows.column_names if c not in wanted])
    return rows.with_format("arrow")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ).lower() in ("1", "true", "yes")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout_s` (no retries)."""
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _offline_message(source: Source, why: str) -> str:
    name = source.location.split("/")[-1]
    return (
        f"cannot load the hub dataset {source.location!r} ({why}). Use a local copy: on a machine with internet run "
        f"`huggingface-cli download --repo-type dataset {source.location} --local-dir /data/{name}`, copy the "
        f"directory here and set data.train_files=/data/{name}@train data.val_files=/data/{name}@val (a directory "
        "of {split}-*.parquet or its data/ folder), or one .parquet file; with the dataset already in the datasets "
        "cache, set HF_HUB_OFFLINE=1. For an offline smoke run use data.train_files=synthetic:64@train."
    )
