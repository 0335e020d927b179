"""Start-up checks fail in seconds with the key, what was found and the fix, before anything expensive starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.preflight import PreflightError, check_data_sources, check_layout, check_lengths, check_model_path

REPO = Path(__file__).resolve().parents[3]


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(REPO / "conf/debug/tiny_cpu.yaml", list(overrides))


def test_model_path_mistakes_name_the_key_what_is_there_and_the_fix(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(PreflightError, match="policy.hf_path is not set; set policy.hf_path to a Hugging Face"):
        check_model_path("")
    with pytest.raises(PreflightError, match=r"relative to the working directory .*: nothing is there"):
        check_model_path("outputs/no-such-model")
    with pytest.raises(PreflightError, match="a hub id is not downloaded at run time"):
        check_model_path("Qwen/Qwen2.5-VL-3B-Instruct")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["Llama"]}))
    with pytest.raises(PreflightError, match="holds a 'llama' model \\(Llama\\), not Qwen2.5-VL"):
        check_model_path(str(tmp_path / "llama"))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(PreflightError, match=r"has no config.json \(found: a.png\)"):
        check_model_path(str(tmp_path / "images"))
    assert check_model_path(str(tiny_model_dir))["model_type"] == "qwen2_5_vl"


def test_length_settings_are_cross_checked_naming_every_key() -> None:
    check_lengths(_cfg())
    with pytest.raises(ConfigError, match=r"data.max_prompt_length=1536 \+ generation.sampling.max_tokens=48 = 1584 .*"
                       r"generation.max_model_len=1024.*raise generation.max_model_len to at least 1584"):  # fmt: skip
        check_lengths(_cfg("generation.max_model_len=1024"))
    with pytest.raises(ConfigError, match="do not fit policy.max_seq_length=1500"):
        check_lengths(_cfg("policy.max_seq_length=1500"))
    with pytest.raises(ConfigError, match="val_sampling.max_tokens=1000"):
        check_lengths(_cfg("generation.val_sampling.max_tokens=1000"))
    with pytest.raises(ConfigError, match="max_position_embeddings=1024"):
        check_lengths(_cfg(), {"text_config": {"max_position_embeddings": 1024}})


def test_layout_and_the_dp_split_are_checked_against_the_world_size() -> None:
    model = {"text_config": {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}}
    check_layout(_cfg("parallel.tensor_model_parallel_size=2"), 2, model)
    with pytest.raises(ConfigError, match="world size 3 is not divisible by TP\\*PP\\*CP"):
        check_layout(_cfg("parallel.tensor_model_parallel_size=2"), 3, model)
    # 2 prompts x 4 samples = 8 per update; DP=4 x micro-batch 4 = 16 does not divide it.
    with pytest.raises(ConfigError, match="do not split over DP=4 ranks .* = 16"):
        check_layout(_cfg(), 4, model)


def test_empty_and_non_parquet_data_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "train.parquet"
    junk.write_text("not parquet")
    with pytest.raises(PreflightError, match=f"data.train_files={junk}: {junk} is not a readable parquet file"):
        check_data_sources(_cfg(f"data.train_files={junk}", "data.val_files="))
    empty = tmp_path / "empty.parquet"
    columns = {"problem": pa.string(), "answer_option_text": pa.string(), "images": pa.list_(pa.binary())}
    pq.write_table(pa.table({k: pa.array([], type=t) for k, t in columns.items()}), empty)
    with pytest.raises(PreflightError, match=f"data.val_files={empty} has no rows"):
        check_data_sources(_cfg(f"data.val_files={empty}"))
    with pytest.raises(PreflightError, match="data.train_files=/nonexistent/x.parquet: .*does not exist"):
        check_data_sources(_cfg("data.train_files=/nonexistent/x.parquet"))


def test_train_reports_a_model_path_mistake_in_one_line_with_status_2_before_starting_vllm(tmp_path: Path) -> None:
    """Run from another working directory with the tiny config's relative policy.hf_path."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nemo_spatial.train", "--config", str(REPO / "conf/debug/tiny_cpu.yaml"),
         f"run.output_dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: policy.hf_path=outputs/tiny-qwen25-vl (relative to the working directory {tmp_path})"
    )
    assert "Traceback" not in done.stderr and "vllm" not in done.stderr.lower()
    assert time.monotonic() - started < 60


@pytest.mark.slow  # two `train` processes: ~30 s on the contended 2-core machine
def test_train_config_errors_are_one_line_with_status_2_and_a_traceback_only_when_verbose(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nemo_spatial.train", "--config", "conf/debug/tiny_cpu.yaml", "reward.presett=x"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'reward.presett'")
    verbose = subprocess.run([*command, "--verbose"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
