"""STVQA-7K's columns and the check that a file has the ones a run needs, with the right types.

What it checks, per parquet file (or hub dataset) before any row is read: every column the run uses
(`prompt_key`, `answer_key`, `image_key`, `problem_key`) exists, and every present STVQA column has its
STVQA type (strings, the image as `{bytes, path}` or raw bytes, `options` a list of strings, `rating` an
integer). A failure raises `DataSchemaError` naming the file, the column, what was found and the fix.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from nemo_spatial.data.config import DataConfig

# STVQA-7K's columns in the hub dataset's order (upstream data_gen/generate_data.py writes them).
STVQA_COLUMNS = (
    "image_id",
    "images",
    "problem",
    "question_only",
    "question_with_options",
    "options",
    "answer",
    "answer_only",
    "answer_text",
    "answer_text_only",
    "answer_option_text",
    "answer_option_text_only",
    "category",
    "level",
    "rating",
)
# Passed through to each sample's metadata (for per-category metrics) when every file has them.
METADATA_COLUMNS = ("image_id", "category", "level", "rating", "answer_option_text_only")
CATEGORIES = (
    "relation",
    "reach",
    "size",
    "orientation",
    "instance_location",
    "depth",
    "distance",
    "count",
    "existence",
)


class DataSchemaError(ValueError):
    """A data file without a needed column or with a column of the wrong type."""


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_image(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or _is_string(t):
        return True  # raw encoded bytes, or a path
    if pa.types.is_struct(t):
        names = {t.field(i).name for i in range(t.num_fields)}
        return "bytes" in names or "path" in names
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _is_image(t.value_type)  # a list of images (one per row is supported)
    return False


def _is_string_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)


_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "images": (_is_image, "an image: struct<bytes: binary, path: string> (datasets' Image) or binary"),
    "options": (_is_string_list, "list<string>"),
    "rating": (pa.types.is_integer, "an integer"),
}
_STRING = (_is_string, "string")


def expected_type(column: str, cfg: DataConfig) -> tuple[Callable[[pa.DataType], bool], str]:
    if column == cfg.image_key:
        return _TYPES["images"]
    return _TYPES.get(column, _STRING)


def required_columns(cfg: DataConfig) -> list[str]:
    return list(dict.fromkeys([cfg.prompt_key, cfg.answer_key, cfg.image_key, cfg.problem_key]))


def check_schema(schema: pa.Schema, source: str, cfg: DataConfig) -> None:
    """Raise DataSchemaError unless `schema` (of the file or dataset `source`) fits the run's columns."""
    names = list(schema.names)
    for column in required_columns(cfg):
        if column not in names:
            raise DataSchemaError(
                f"{source}: column {column!r} is missing (the file has: {', '.join(names)}); point data."
                f"{_config_key(column, cfg)} at one of these columns or use a file in STVQA-7K's format"
            )
    for column in [c for c in names if c in STVQA_COLUMNS or c in required_columns(cfg)]:
        check, wanted = expected_type(column, cfg)
        found = schema.field(column).type
        if not check(found):
            raise DataSchemaError(f"{source}: column {column!r} has type {found}, expected {wanted}")


def _config_key(column: str, cfg: DataConfig) -> str:
    for key in ("prompt_key", "answer_key", "image_key", "problem_key"):
        if getattr(cfg, key) == column:
            return key
    return "prompt_key"
