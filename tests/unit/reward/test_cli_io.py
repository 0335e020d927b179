"""`python -m nemo_spatial.reward score`: where it reads and writes, and what it refuses (issue 13).

An output that is the input (the same path, a symbolic link, a hard link) used to truncate the input and exit 0.
"""

import json
import os
import subprocess
import sys

import pytest

from nemo_spatial.cli import run_main
from nemo_spatial.reward import RewardResult, RewardScorer
from nemo_spatial.reward.__main__ import main, score_file
from nemo_spatial.reward.examples import GROUND_TRUTH, PROBLEM, response

LINE = json.dumps({"response": response(), "ground_truth": GROUND_TRUTH, "problem": PROBLEM}) + "\n"


CLI = (sys.executable, "-m", "nemo_spatial.reward", "score", "--similarity", "trigram")


def _score(*argv):
    return run_main(main, ["score", "--similarity", "trigram", *map(str, argv)])


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(LINE * 3)
    return path


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link", "relative path"])
def test_an_output_that_is_the_input_is_refused_and_the_input_left_intact(source, link, capsys, monkeypatch):
    output = source
    if link == "symlink":
        output = source.with_name("link.jsonl")
        output.symlink_to(source)
    elif link == "hard link":
        output = source.with_name("hard.jsonl")
        os.link(source, output)
    elif link == "relative path":
        monkeypatch.chdir(source.parent)
        output = f"./sub/../{source.name}"
        (source.parent / "sub").mkdir()
    assert _score("--input", source, "--output", output) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and "is the input file" in err and err.count("\n") == 1
    assert source.read_text() == LINE * 3


def test_the_output_appears_only_when_complete(source, tmp_path):
    """A run that dies mid-way leaves the previous output as it was and no partial file under its name."""
    sink = tmp_path / "out.jsonl"
    sink.write_text("previous\n")

    class Dying(RewardScorer):
        calls = 0

        def score_one(self, sample) -> RewardResult:
            Dying.calls += 1
            if Dying.calls == 2:
                raise KeyboardInterrupt
            return super().score_one(sample)

    with pytest.raises(KeyboardInterrupt):
        score_file(source, sink, Dying("spatialthinker", "trigram"))
    assert sink.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no staging file left
    assert score_file(source, sink, RewardScorer("spatialthinker", "trigram")) == 0
    assert len(sink.read_text().splitlines()) == 3


def test_writing_through_a_symlink_replaces_its_target(source, tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    (tmp_path / "alias.jsonl").symlink_to(target)
    assert _score("--input", source, "--output", tmp_path / "alias.jsonl") == 0
    assert (tmp_path / "alias.jsonl").is_symlink() and len(target.read_text().splitlines()) == 3


@pytest.mark.parametrize("side", ["--input", "--output"])
def test_a_directory_on_either_side_is_a_clear_error(source, tmp_path, side, capsys):
    args = {"--input": source, "--output": tmp_path / "out.jsonl"} | {side: tmp_path}
    assert _score("--input", args["--input"], "--output", args["--output"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {side} {tmp_path} is a directory; " + err.split("; ", 1)[1] and err.count("\n") == 1


@pytest.mark.parametrize("stdin_name", ["-", "/dev/stdin"])
def test_standard_input_and_output(stdin_name):
    done = subprocess.run(
        [*CLI, "--input", stdin_name, "--output", "-"],
        input=LINE * 2,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2 and all(round(line["reward"]["overall"], 6) == 1.0 for line in lines)


def test_stdin_redirected_from_the_output_file_is_refused(source):
    with source.open() as stdin:
        done = subprocess.run(
            [*CLI, "--input", "-", "--output", str(source)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2 and "is the input file" in done.stderr and "Traceback" not in done.stderr
    assert source.read_text() == LINE * 3


def test_verbose_shows_the_traceback(source, capsys):
    assert (
        run_main(
            main, ["--verbose", "score", "--similarity", "trigram", "--input", str(source), "--output", str(source)]
        )
        == 2
    )
    assert "Traceback" in capsys.readouterr().err
