"""Every benchmark's fixture end to end through the vllm backend (real vLLM CPU engine) and the hf backend
(transformers), with the tiny Qwen2.5-VL: same greedy responses from both, multi-image rows, settings recorded.

One engine per module (a vLLM start is 30-60 s, minutes on the shared machine): each backend runs the CLI once
over all benchmarks, and the tests read those outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nemo_spatial.eval.__main__ import main
from nemo_spatial.eval.benchmarks import BENCHMARKS
from nemo_spatial.eval.synth import write_fixtures

pytestmark = pytest.mark.slow
N = 2
COMMON = ["--benchmarks", "all", "--limit", str(N), "--max-new-tokens", "8", "--min-pixels", "3136",
          "--max-pixels", "12544", "--dtype", "float32", "--no-progress", "--batch-size", "16"]  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a checkpoint repetition penalty, which upstream inherits and we must make explicit."""
    copy = tmp_path_factory.mktemp("tiny-rp") / "model"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.05}))
    return copy


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("local-data"), n=4)


@pytest.fixture(scope="module")
def runs(model: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("local-runs")
    vllm_flags = ["--enforce-eager", "--kv-cache-gb", "0.25", "--max-model-len", "4096"]
    assert main(["--model", str(model), "--backend", "vllm", "--data-dir", str(data_dir), "--out", str(root / "vllm"),
                 *COMMON, *vllm_flags]) == 0  # fmt: skip
    assert main(["--model", str(model), "--backend", "hf", "--data-dir", str(data_dir), "--out", str(root / "hf"),
                 *COMMON]) == 0  # fmt: skip
    return {"vllm": root / "vllm", "hf": root / "hf"}


def samples(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_every_benchmark_runs_without_errors(runs: dict[str, Path], backend: str) -> None:
    results = json.loads((runs[backend] / "results.json").read_text())
    assert set(results["benchmarks"]) == set(BENCHMARKS)
    for key, r in results["benchmarks"].items():
        assert (r["n"], r["errors"]) == (N, 0), key
    lines = samples(runs[backend])
    images = {x["benchmark"]: x["n_images"] for x in lines}
    assert images["blink-jigsaw"] == 3 and images["robospatial"] == 2 and images["mindcube-tiny"] == 2
    assert all(x["response"] for x in lines)


def test_vllm_and_hf_give_the_same_greedy_responses(runs: dict[str, Path]) -> None:
    vllm, hf = samples(runs["vllm"]), samples(runs["hf"])
    assert [(x["benchmark"], x["sample_id"]) for x in vllm] == [(x["benchmark"], x["sample_id"]) for x in hf]
    assert [x["prompt"] for x in vllm] == [x["prompt"] for x in hf]
    assert [x["response"] for x in vllm] == [x["response"] for x in hf]


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_checkpoint_repetition_penalty_is_explicit_and_recorded(runs: dict[str, Path], backend: str) -> None:
    settings = json.loads((runs[backend] / "config.json").read_text())["backend_settings"]
    assert settings["repetition_penalty"] == 1.05
    assert settings["repetition_penalty_source"].endswith("generation_config.json")
    assert settings.get("temperature", 0.0) == 0.0
