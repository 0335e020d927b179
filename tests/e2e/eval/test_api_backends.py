"""openai and anthropic backends through the official SDKs against local servers speaking their wire formats."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from nemo_spatial.eval.__main__ import main
from nemo_spatial.eval.synth import write_fixtures

from .fake_apis import FakeApi


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("api-data"), ["cv-bench-2D", "blink-multi-view"], n=4)


def run_eval(api: FakeApi, backend: str, data_dir: Path, out: Path, *extra: str) -> dict:
    argv = ["--model", "fake-model", "--backend", backend, "--url", api.url, "--data-dir", str(data_dir),
            "--benchmarks", "cv-bench-2D,blink-multi-view", "--out", str(out), "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def test_openai_wire_format_retries_and_errors(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeApi("openai") as api:
        api.script = [(429, {"retry-after": "1"}), (500, {})]
        results = run_eval(api, "openai", data_dir, tmp_path / "out", "--concurrency", "1", "--max-retries", "3")
    first, second, third = api.requests[:3]
    assert third["t"] - first["t"] >= 1.0  # the 429's retry-after was honoured before the retry
    assert first["body"] == second["body"] == third["body"]
    assert first["headers"]["authorization"] == "Bearer test-key"
    body = first["body"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 2048 and body["model"] == "fake-model"
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "text"  # text first, then the images, as upstream
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (72, 56)  # full resolution, no resize
    multi = [r for r in api.requests if len(r["body"]["messages"][0]["content"]) == 3]
    assert len(multi) >= 4  # blink multi-view: two images per request
    assert len(api.requests) == 8 + 2  # 8 samples, 2 retries
    assert results["benchmarks"]["cv-bench-2D"]["n"] == 4
    assert results["benchmarks"]["cv-bench-2D"]["errors"] == 0


def test_api_error_is_recorded_not_scored(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeApi("openai") as api:
        api.script = [(500, {})] * 3  # the first sample fails every try (1 + 2 retries)
        results = run_eval(api, "openai", data_dir, tmp_path / "out", "--concurrency", "1", "--max-retries", "2")
    bench = results["benchmarks"]["cv-bench-2D"]
    assert (bench["errors"], bench["n"]) == (1, 3)
    lines = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    failed = [x for x in lines if x["status"] == "error"]
    assert len(failed) == 1 and "500" in failed[0]["error"] and failed[0]["response"] is None


def test_concurrency_is_bounded(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeApi("openai", delay_s=0.2) as api:
        run_eval(api, "openai", data_dir, tmp_path / "out", "--concurrency", "2", "--batch-size", "8")
    assert api.peak == 2


def test_anthropic_wire_format_and_retries(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with FakeApi("anthropic") as api:
        api.script = [(429, {"retry-after": "1"}), (500, {})]
        results = run_eval(api, "anthropic", data_dir, tmp_path / "out", "--concurrency", "1")
    first, _, third = api.requests[:3]
    assert third["t"] - first["t"] >= 1.0
    headers = first["headers"]
    assert "test-key" in (headers.get("x-api-key", ""), headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in headers
    body = first["body"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 2048
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "image" and content[-1]["type"] == "text"  # images first, as upstream
    assert content[0]["source"]["media_type"] == "image/jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(content[0]["source"]["data"]))).format == "JPEG"
    assert results["benchmarks"]["blink-multi-view"]["n"] == 4


def test_missing_key_is_one_clear_error(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from nemo_spatial.cli import run_main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    argv = ["--model", "gpt-4o", "--backend", "openai", "--data-dir", str(data_dir), "--benchmarks", "cv-bench-2D",
            "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert run_main(main, argv) == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err


def test_vllm_backend_at_a_server_url_sends_its_settings(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local vLLM server needs no key
    with FakeApi("openai") as api:
        argv = ["--model", "owner/served-model", "--backend", "vllm", "--url", api.url, "--data-dir", str(data_dir),
                "--benchmarks", "cv-bench-2D", "--out", str(tmp_path / "out"), "--no-progress",
                "--repetition-penalty", "1.05"]  # fmt: skip
        assert main(argv) == 0
    body = api.requests[0]["body"]
    assert (body["temperature"], body["repetition_penalty"], body["model"]) == (0.0, 1.05, "owner/served-model")
    settings = json.loads((tmp_path / "out" / "config.json").read_text())["backend_settings"]
    assert settings["backend"] == "vllm" and settings["repetition_penalty"] == 1.05
