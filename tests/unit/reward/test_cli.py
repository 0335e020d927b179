"""`python -m nemo_spatial.reward score` and `demo`, run as a user would."""

import json
import subprocess
import sys

import pytest

from nemo_spatial.reward import RewardScorer
from nemo_spatial.reward.__main__ import demo, score_file
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nemo_spatial.reward", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_score_writes_each_line_with_reward_and_names_bad_lines(tmp_path):
    good = {"response": response(), "ground_truth": GROUND_TRUTH, "problem": PROBLEM, "id": 7}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"response": "x"}),
        "",
        json.dumps({**good, "problem": "no size"}),
        json.dumps(good),
    ]
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = _run(
        "score", "--preset", "spatialthinker", "--similarity", "trigram", "--input", str(source), "--output", str(sink)
    )
    assert done.returncode == 1
    assert "3 line(s) had errors" in done.stderr and "lines 2, 3, 5" in done.stderr
    out = [json.loads(line) for line in sink.read_text().splitlines()]
    assert len(out) == 5  # the blank line is skipped
    assert out[0]["id"] == 7 and out[0]["error"] is None
    assert round(out[0]["reward"]["overall"], 6) == 1.0
    assert set(out[0]["reward"]) == {"overall", "format", "count", "accuracy", "spatial"}
    assert out[1]["error"].startswith("line 2: not valid JSON")
    assert out[2]["error"] == "line 3: missing field(s) ground_truth, problem"
    assert out[3]["error"].startswith("line 5: ValueError: prompt has no 'Image size")
    assert out[3]["reward"]["overall"] == 0.0 and out[4]["error"] is None


def test_score_of_a_clean_file_exits_zero(tmp_path):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps(
            {"response": "<think>a</think><answer>(A) behind</answer>", "ground_truth": "(A) behind", "problem": ""}
        )
        + "\n"
    )
    done = _run("score", "--preset", "r1v", "--input", str(source), "--output", str(sink))
    assert done.returncode == 0, done.stderr
    assert json.loads(sink.read_text())["reward"]["overall"] == 1.0


def test_missing_input_file_is_a_clear_error(tmp_path):
    done = _run("score", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_demo_prints_the_table_and_records_config_and_revision(tmp_path, repo_root):
    done = _run(
        "demo",
        "--config",
        str(repo_root / "conf/base.yaml"),
        f"run.output_dir={tmp_path}",
        "reward.similarity=trigram",
        cwd=repo_root,
    )
    assert done.returncode == 0, done.stderr
    assert "labels of the two boxes swapped" in done.stdout and "0.8755" in done.stdout
    run_dir = tmp_path / "debug"
    assert "similarity: trigram" in (run_dir / "config.yaml").read_text()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["git"] != "" and "argv" in info
    assert len((run_dir / "rewards.jsonl").read_text().splitlines()) == 12


def test_a_line_that_is_not_utf8_is_that_lines_error(tmp_path):
    good = json.dumps({"response": "<think>a</think><answer>(A)</answer>", "ground_truth": "(A)", "problem": ""})
    bad = good.encode().replace(b"a", b"\xff", 1)  # once read with errors="replace" and scored as U+FFFD
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"\n".join([good.encode(), bad, good.encode()]) + b"\n")
    assert score_file(source, sink, RewardScorer("r1v")) == 1
    out = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [record.get("error") for record in (out[0], out[2])] == [None, None]
    assert out[1]["error"].startswith("line 2: not valid UTF-8 (") and "0xff" in out[1]["error"]
    assert out[1]["line"] == 2 and set(out[1]["reward"].values()) == {0.0}
    assert out[0]["reward"]["overall"] == out[2]["reward"]["overall"] == 1.0


def test_demo_uses_the_configured_similarity_model(tmp_path, repo_root, capsys):
    spacy = pytest.importorskip("spacy")
    model_dir = tmp_path / "vectors"
    spacy.blank("en").to_disk(model_dir)
    overrides = [f"run.output_dir={tmp_path}", "reward.similarity=spacy", f"reward.similarity_model={model_dir}"]
    assert demo(str(repo_root / "conf/base.yaml"), overrides) == 0
    assert "label similarity spacy" in capsys.readouterr().out
