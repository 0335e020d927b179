"""Data sources: local parquet files and directories, synthetic specs, and the hub without a network."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nemo_spatial.data import sources
from nemo_spatial.data.sources import DataSourceError, load_rows, parse_source


def _ids(rows) -> list[str]:
    return rows.data.column("image_id").to_pylist()


def test_parse_source_kinds(synth_dir: Path) -> None:
    assert parse_source("hunarbatra/STVQA-7K@val") == sources.Source("hub", "hunarbatra/STVQA-7K", "val")
    assert parse_source("hunarbatra/STVQA-7K").split == "train"
    assert parse_source(f"{synth_dir}@val") == sources.Source("dir", str(synth_dir), "val")
    file = synth_dir / "val-00000-of-00001.parquet"
    assert parse_source(str(file)).kind == "file"
    assert parse_source("synthetic:32:7@val") == sources.Source("synthetic", "synthetic:32:7", "val", rows=32, seed=7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("/no/such/dir@train", "does not exist"),
        ("missing.parquet", "does not exist"),
        ("a/b/c@train", "not a hub id"),
        ("synthetic:x@train", "synthetic:N"),
        ("synthetic:0@train", ">= 1"),
    ],
)
def test_bad_specs_say_what_to_use(spec: str, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        parse_source(spec)


def test_directory_of_split_files(synth_dir: Path, data_cfg) -> None:
    rows = load_rows(f"{synth_dir}@train", data_cfg())
    assert len(rows) == 18 and _ids(rows)[0] == "synthetic-0-train-000000"
    assert len(load_rows(f"{synth_dir}@val", data_cfg())) == 9


def test_one_parquet_file(synth_dir: Path, data_cfg) -> None:
    rows = load_rows(str(synth_dir / "val-00000-of-00001.parquet"), data_cfg())
    assert _ids(rows) == [f"synthetic-0-val-{i:06d}" for i in range(9)]


def test_hub_snapshot_layout_and_several_shards(synth_dir: Path, tmp_path: Path, data_cfg) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(synth_dir / "train-00000-of-00001.parquet")
    (tmp_path / "snap" / "data").mkdir(parents=True)
    pq.write_table(table.slice(0, 10), tmp_path / "snap" / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(10), tmp_path / "snap" / "data" / "train-00001-of-00002.parquet")
    rows = load_rows(f"{tmp_path / 'snap'}@train", data_cfg())
    assert _ids(rows) == table.column("image_id").to_pylist()  # shards in name order, rows in file order
    with pytest.raises(DataSourceError, match="no test-\\*.parquet.*splits found: train"):
        load_rows(f"{tmp_path / 'snap'}@test", data_cfg())


def test_only_needed_and_metadata_columns_are_loaded(synth_dir: Path, data_cfg) -> None:
    rows = load_rows(f"{synth_dir}@train", data_cfg())
    wanted = {"problem", "answer_option_text", "images", "image_id", "category", "level", "rating"}
    assert set(rows.column_names) == wanted | {"answer_option_text_only"}
    row = rows[0:1].to_pylist()[0]
    assert isinstance(row["images"]["bytes"], bytes)  # still encoded: decoding happens in the workers


def test_synthetic_spec_is_generated_once_into_the_cache(data_cfg, tmp_path: Path) -> None:
    cfg = data_cfg(cache_dir=str(tmp_path / "c"))
    first = load_rows("synthetic:9:3@train", cfg)
    folder = tmp_path / "c" / "synthetic" / "train-n9-seed3"
    assert (folder / "COMPLETE").is_file() and len(first) == 9
    stamp = (folder / "train-00000-of-00001.parquet").stat().st_mtime_ns
    assert len(load_rows("synthetic:9:3@train", cfg)) == 9
    assert (folder / "train-00000-of-00001.parquet").stat().st_mtime_ns == stamp  # not generated again
    val = load_rows("synthetic:5:3@val", cfg)
    assert len(val) == 5 and val.data.column("image_id")[0].as_py() == "synthetic-3-val-000000"
    with pytest.raises(DataSourceError, match="splits train, val, not 'test'"):
        load_rows("synthetic:5@test", cfg)


def test_hub_id_offline_fails_at_once_with_the_fix(data_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout_s=3.0: False)
    start = time.monotonic()
    with pytest.raises(DataSourceError) as error:
        load_rows("hunarbatra/STVQA-7K@train", data_cfg())
    message = str(error.value)
    assert time.monotonic() - start < 5
    assert "hunarbatra/STVQA-7K" in message and "not reachable" in message
    assert "huggingface-cli download --repo-type dataset hunarbatra/STVQA-7K" in message
    assert "data.train_files=/data/STVQA-7K@train" in message


def test_hub_reachable_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    assert sources.hub_reachable(timeout_s=1.0) is False
    assert time.monotonic() - start < 3
