"""Checks that run before anything expensive starts (the generation server, the policy, the data workers).

    preflight(cfg, world_size)      # raises PreflightError (a UserError) naming the key, what was found, the fix

What it checks, in seconds and without importing vLLM or Megatron:
- `policy.hf_path`: set, an existing directory (a relative path is resolved against the working directory, and
  the message says which one), with a `config.json` of a Qwen2.5-VL model and its weights and tokenizer;
  otherwise vLLM would report it later as an argparse usage line, a pydantic error or a hub download attempt.
- the length settings against each other: the longest prompt the data admits (`data.max_prompt_length`) plus
  the longest response (`generation.sampling.max_tokens`, `generation.val_sampling.max_tokens`) must fit the
  generation server (`generation.max_model_len`) and the policy (`policy.max_seq_length`), and the server's
  length must fit the model's positions; otherwise whole groups are dropped or a step fails mid-run.
- the parallel layout against the world size and the model (heads, layers), and the DP split of an optimizer
  step's samples (`trainer.prompts_per_update x generation.sampling.n` over DP x `policy.micro_batch_size`).
- the local data sources (`data.train_files`, `data.val_files`): each parquet file readable, of the expected
  columns, and the source not empty; a hub id or synthetic data is checked when it is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nemo_spatial.config import Config
from nemo_spatial.errors import ConfigError, UserError

QWEN25_VL_MODEL_TYPE = "qwen2_5_vl"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
HF_PATH_FIX = (
    "set policy.hf_path to a Hugging Face Qwen2.5-VL checkpoint directory (e.g. a local copy of "
    "Qwen/Qwen2.5-VL-3B-Instruct; the tiny offline one: python -m nemo_spatial.models.tiny --out DIR)"
)


class PreflightError(UserError):
    """A setting that would fail the run later, found before anything expensive started."""


def preflight(cfg: Config, world_size: int) -> None:
    """Every start-up check of this module (see the docstring); the first failure raises."""
    model_config = check_model_path(cfg.policy.hf_path)
    check_lengths(cfg, model_config)
    check_layout(cfg, world_size, model_config)
    check_data_sources(cfg)


# ---- the model -------------------------------------------------------------------------------------------
def check_model_path(hf_path: str) -> dict[str, Any]:
    """The model's config.json, once policy.hf_path is known to be a Qwen2.5-VL checkpoint directory."""
    if not hf_path:
        raise PreflightError(f"policy.hf_path is not set; {HF_PATH_FIX}")
    path = Path(hf_path).expanduser()
    where = f"policy.hf_path={hf_path}"
    if not path.is_absolute():
        where += f" (relative to the working directory {Path.cwd()})"
    if not path.exists():
        hub = _hub_like(hf_path)
        hint = " (a hub id is not downloaded at run time: download it and pass the directory)" if hub else ""
        raise PreflightError(f"{where}: nothing is there{hint}; {HF_PATH_FIX}; use an absolute path")
    if not path.is_dir():
        raise PreflightError(f"{where} is a file, not a checkpoint directory; {HF_PATH_FIX}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PreflightError(f"{where} has no config.json (found: {_listing(path)}); {HF_PATH_FIX}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise PreflightError(f"{where}: config.json is not readable JSON ({error}); {HF_PATH_FIX}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != QWEN25_VL_MODEL_TYPE:
        architectures = ", ".join(config.get("architectures") or []) if isinstance(config, dict) else ""
        raise PreflightError(
            f"{where} holds a {model_type!r} model ({architectures or 'no architectures listed'}), not Qwen2.5-VL "
            f"(model_type {QWEN25_VL_MODEL_TYPE!r}); {HF_PATH_FIX}"
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise PreflightError(f"{where} has no weights (*.safetensors; found: {_listing(path)}); {HF_PATH_FIX}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise PreflightError(f"{where} has no tokenizer (tokenizer.json; found: {_listing(path)}); {HF_PATH_FIX}")
    return config


def _hub_like(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/", "~"))


def _listing(path: Path, limit: int = 8) -> str:
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
    return shown or "an empty directory"


def _text_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """Transformers >= 4.5x nests the language model's sizes in text_config; older files keep them on top."""
    nested = model_config.get("text_config")
    return {**model_config, **nested} if isinstance(nested, dict) else model_config


# ---- lengths ---------------------------------------------------------------------------------------------
def check_lengths(cfg: Config, model_config: dict[str, Any] | None = None) -> None:
    """Prompt + response must fit the generation server, the policy and the model (see the module docstring)."""
    prompt = cfg.data.max_prompt_length
    responses = {"generation.sampling.max_tokens": cfg.generation.sampling.max_tokens}
    if cfg.trainer.val_every > 0 and cfg.data.val_files:
        responses["generation.val_sampling.max_tokens"] = cfg.generation.val_sampling.max_tokens
    for key, response in responses.items():
        total = prompt + response
        for limit_key, limit in (
            ("generation.max_model_len", cfg.generation.max_model_len),
            ("policy.max_seq_length", cfg.policy.max_seq_length),
        ):
            if total > limit:
                raise ConfigError(
                    f"data.max_prompt_length={prompt} + {key}={response} = {total} tokens do not fit "
                    f"{limit_key}={limit}: a prompt the data admits would "
                    + ("be refused by the generation server (its group dropped)" if limit_key.startswith("gen")
                       else "fail the policy's step")
                    + f"; raise {limit_key} to at least {total}, or lower data.max_prompt_length or {key}"
                )  # fmt: skip
    positions = _text_config(model_config or {}).get("max_position_embeddings")
    if isinstance(positions, int) and cfg.generation.max_model_len > positions:
        raise ConfigError(
            f"generation.max_model_len={cfg.generation.max_model_len} is more than the model's "
            f"max_position_embeddings={positions} (policy.hf_path={cfg.policy.hf_path}); lower it to {positions}"
        )


# ---- layout and DP split ---------------------------------------------------------------------------------
def check_layout(cfg: Config, world_size: int, model_config: dict[str, Any] | None = None) -> None:
    """World size vs TP x PP x CP, the model's heads and layers vs TP / PP, and the DP split of an update."""
    from nemo_spatial.parallel.layout import check_model_fits, check_sequence_length, resolve_layout

    layout = resolve_layout(cfg.parallel, world_size)
    text = _text_config(model_config or {})
    layers, heads = text.get("num_hidden_layers"), text.get("num_attention_heads")
    if isinstance(layers, int) and isinstance(heads, int):
        groups = text.get("num_key_value_heads")
        groups = groups if isinstance(groups, int) else heads
        check_model_fits(layout, num_layers=layers, num_attention_heads=heads, num_query_groups=groups)
    check_sequence_length(layout, cfg.policy.max_seq_length, name="policy.max_seq_length")
    per_update = cfg.trainer.prompts_per_update * cfg.generation.sampling.n
    multiple = layout.data * cfg.policy.micro_batch_size
    if per_update % multiple:
        raise ConfigError(
            f"an optimizer step takes trainer.prompts_per_update x generation.sampling.n = {per_update} samples, "
            f"which do not split over DP={layout.data} ranks ({layout.describe()}) x policy.micro_batch_size="
            f"{cfg.policy.micro_batch_size} = {multiple}; make it a multiple of {multiple}, or change the "
            "micro-batch size or the parallel layout"
        )


# ---- data ------------------------------------------------------------------------------------------------
def check_data_sources(cfg: Config) -> None:
    """Every local parquet file of data.train_files / data.val_files opens, has the columns, and has rows."""
    specs = {"data.train_files": cfg.data.train_files}
    if cfg.data.val_files:
        specs["data.val_files"] = cfg.data.val_files
    for key, spec in specs.items():
        check_data_source(key, spec, cfg)


def check_data_source(key: str, spec: str, cfg: Config) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nemo_spatial.data.schema import DataSchemaError, check_schema
    from nemo_spatial.data.sources import DataSourceError, parquet_files, parse_source

    try:
        source = parse_source(spec)
        if source.kind in ("hub", "synthetic"):
            return  # checked when loaded: the hub fails at once offline; synthetic data is generated
        files = parquet_files(source, cfg.data)
    except DataSourceError as error:
        raise PreflightError(f"{key}={spec}: {error}") from None
    rows = 0
    for file in files:
        if not os.access(file, os.R_OK):
            raise PreflightError(f"{key}={spec}: {file} is not readable by this user; fix its permissions")
        try:
            metadata = pq.ParquetFile(file).metadata
            check_schema(metadata.schema.to_arrow_schema(), str(file), cfg.data)
        except (pa.ArrowException, OSError) as error:
            raise PreflightError(
                f"{key}={spec}: {file} is not a readable parquet file ({type(error).__name__}: {error}); point "
                f"{key} at STVQA-format parquet files"
            ) from None
        except DataSchemaError as error:
            raise PreflightError(f"{key}={spec}: {error}") from None
        rows += metadata.num_rows
    if rows == 0:
        listed = ", ".join(str(f) for f in files[:4])
        raise PreflightError(f"{key}={spec} has no rows ({listed}); point {key} at a source with prompts")
