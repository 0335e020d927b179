"""The runner end to end with the openai backend on a local server: outputs, replay, and --resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_spatial.eval.__main__ import main
from nemo_spatial.eval.synth import write_fixtures

from .fake_apis import FakeApi

BENCHES = "cv-bench,mmvp,hallusionbench"
SAMPLE_FIELDS = ["benchmark", "sample_id", "task", "prompt", "choices", "answer", "response", "extracted", "correct",
                 "latency"]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("runner-data"), ["cv-bench", "mmvp", "hallusionbench"], n=8)


def argv(api: FakeApi, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", "fake-model", "--backend", "openai", "--url", api.url, "--data-dir", str(data_dir),
            "--benchmarks", BENCHES, "--out", str(out), "--no-progress", *extra]  # fmt: skip


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def without_latency(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("latency", "info")} for r in records]


def test_outputs_and_replay(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with FakeApi("openai") as api:
        assert main(argv(api, data_dir, tmp_path / "run", "--limit", "6")) == 0
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {
        "samples.jsonl",
        "results.json",
        "report.md",
        "report.png",
        "config.json",
    }
    samples = lines(out / "samples.jsonl")
    assert list(samples[0])[: len(SAMPLE_FIELDS)] == SAMPLE_FIELDS
    assert len(samples) == 18  # --limit 6 per benchmark
    results = json.loads((out / "results.json").read_text())
    cv = results["benchmarks"]["cv-bench"]
    assert set(cv["tasks"]) == {"Count", "Relation", "Distance", "Depth"}  # stratified: every task kept
    assert cv["standard_metric"]["name"] == "source-weighted accuracy"
    assert results["benchmarks"]["hallusionbench"]["standard_metric"]["qAcc"] is not None
    assert cv["alternative"]["scoring"] == "upstream"
    config = json.loads((out / "config.json").read_text())
    assert config["git"]["commit"] and config["backend_settings"]["temperature"] == 0.0
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cv-bench |" in (out / "report.md").read_text()

    # replay: the run's own samples.jsonl re-scores to the same numbers, and upstream scoring differs
    assert main(["--backend", "replay", "--responses", str(out / "samples.jsonl"), "--out", str(tmp_path / "re")]) == 0
    replayed = json.loads((tmp_path / "re" / "results.json").read_text())
    assert replayed["benchmarks"] == results["benchmarks"]
    assert main(["--backend", "replay", "--responses", str(out / "samples.jsonl"), "--out", str(tmp_path / "up"),
                 "--upstream-scoring"]) == 0  # fmt: skip
    upstream = json.loads((tmp_path / "up" / "results.json").read_text())
    assert upstream["scoring"] == "upstream"
    assert (
        upstream["benchmarks"]["cv-bench"]["accuracy"] == results["benchmarks"]["cv-bench"]["alternative"]["accuracy"]
    )


def test_replay_of_minimal_lines(tmp_path: Path) -> None:
    minimal = [
        {"benchmark": "cv-bench", "sample_id": "1", "task": "Count", "choices": ["3", "2"], "answer": "(B)",
         "response": "<answer>B</answer>"},
        {"benchmark": "cv-bench", "sample_id": "2", "task": "Count", "choices": ["3", "2"], "answer": "(B)",
         "response": "B"},
    ]  # fmt: skip
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in minimal))
    assert main(["--backend", "replay", "--responses", str(path), "--out", str(tmp_path / "out")]) == 0
    out = lines(tmp_path / "out" / "samples.jsonl")
    assert [(x["extracted"], x["correct"], x["status"]) for x in out] == [
        ("B", True, "ok"),
        (None, False, "unparseable"),
    ]


def test_replay_rejects_lines_without_the_required_fields(tmp_path: Path) -> None:
    from nemo_spatial.cli import run_main

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"benchmark": "cv-bench", "sample_id": "1"}) + "\n")
    assert run_main(main, ["--backend", "replay", "--responses", str(path), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.slow  # three CLI processes (~50 s on the shared machine)
def test_resume_after_a_kill_gives_the_same_results(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "k", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    with FakeApi("openai", delay_s=0.05) as api:
        full = tmp_path / "full"
        assert main_subprocess(argv(api, data_dir, full, "--batch-size", "2", "--concurrency", "1"), env) == 0
        n_full = len(api.requests)
        interrupted = tmp_path / "interrupted"
        command = [sys.executable, "-m", "nemo_spatial.eval", *argv(api, data_dir, interrupted, "--batch-size", "2",
                                                                   "--concurrency", "1")]  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        generations = interrupted / "generations.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not generations.is_file() or len(generations.read_text().splitlines()) < 6
        ):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (interrupted / "results.json").exists()
        before = len(api.requests)
        assert main_subprocess(argv(api, data_dir, interrupted, "--batch-size", "2", "--concurrency", "1",
                                    "--resume"), env) == 0  # fmt: skip
        resumed_requests = len(api.requests) - before
    assert 0 < resumed_requests < n_full  # it continued, not restarted
    assert json.loads((interrupted / "results.json").read_text()) == json.loads((full / "results.json").read_text())
    assert without_latency(lines(interrupted / "samples.jsonl")) == without_latency(lines(full / "samples.jsonl"))


def main_subprocess(args: list[str], env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-m", "nemo_spatial.eval", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.returncode


def test_resume_refuses_other_settings(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from nemo_spatial.cli import run_main

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with FakeApi("openai") as api:
        assert main(argv(api, data_dir, tmp_path / "run", "--limit", "2")) == 0
        assert run_main(main, argv(api, data_dir, tmp_path / "run", "--limit", "3", "--resume")) == 2
        assert run_main(main, argv(api, data_dir, tmp_path / "run", "--limit", "2")) == 2  # not empty, no --resume


def test_list_prints_every_key(capsys) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "blink-multi-view" in text and "mindcube-tiny" in text and "image+depth_image" in text
