"""Schema checks name the file, the column and the fix before any row is read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_spatial.data.schema import STVQA_COLUMNS, DataSchemaError, check_schema
from nemo_spatial.data.sources import load_rows


def _table(synth_dir: Path) -> pa.Table:
    return pq.read_table(synth_dir / "train-00000-of-00001.parquet")


def test_synthetic_files_pass_and_have_stvqas_columns(synth_dir: Path, data_cfg) -> None:
    schema = pq.read_schema(synth_dir / "train-00000-of-00001.parquet")
    assert tuple(schema.names) == STVQA_COLUMNS
    check_schema(schema, "x", data_cfg())
    check_schema(schema, "x", data_cfg(prompt_key="question_with_options", answer_key="answer_option_text_only"))


def test_missing_column_names_column_and_file(synth_dir: Path, tmp_path: Path, data_cfg) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    table = _table(synth_dir)
    pq.write_table(table, folder / "train-00000-of-00002.parquet")
    pq.write_table(table.drop_columns(["answer_option_text"]), folder / "train-00001-of-00002.parquet")
    with pytest.raises(DataSchemaError) as error:
        load_rows(f"{folder}@train", data_cfg())
    message = str(error.value)
    assert "train-00001-of-00002.parquet" in message and "'answer_option_text' is missing" in message
    assert "data.answer_key" in message


def test_wrong_type_names_column_file_and_types(synth_dir: Path, tmp_path: Path, data_cfg) -> None:
    table = _table(synth_dir)
    bad = table.set_column(
        table.schema.get_field_index("rating"), "rating", pa.array([str(x) for x in table.column("rating").to_pylist()])
    )
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataSchemaError, match=r"bad.parquet: column 'rating' has type string, expected an integer"):
        load_rows(str(tmp_path / "bad.parquet"), data_cfg())
    no_image = table.set_column(table.schema.get_field_index("images"), "images", pa.array(range(len(table))))
    pq.write_table(no_image, tmp_path / "noimg.parquet")
    with pytest.raises(DataSchemaError, match=r"column 'images' has type int64, expected an image"):
        load_rows(str(tmp_path / "noimg.parquet"), data_cfg())


def test_a_configured_key_that_is_absent(synth_dir: Path, data_cfg) -> None:
    with pytest.raises(DataSchemaError, match=r"column 'prompt' is missing.*data.prompt_key"):
        load_rows(f"{synth_dir}@train", data_cfg(prompt_key="prompt"))


def test_raw_bytes_images_and_extra_columns_are_fine(synth_dir: Path, tmp_path: Path, data_cfg) -> None:
    table = _table(synth_dir)
    raw = pa.array([v["bytes"] for v in table.column("images").to_pylist()], type=pa.binary())
    table = table.set_column(table.schema.get_field_index("images"), "images", raw).append_column(
        "extra", pa.array([1] * len(table))
    )
    pq.write_table(table, tmp_path / "raw.parquet")
    assert len(load_rows(str(tmp_path / "raw.parquet"), data_cfg())) == 18
