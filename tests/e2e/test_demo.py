"""`make demo`'s two runs as a user starts them: an SFT warm start of the tiny model on synthetic data, then
SpatialThinker-recipe GRPO from its checkpoint (policy.init_checkpoint).

Measured on the 2-core machine (README, Quick start, has the trial log). SFT: validation loss 7.654 -> 0.900
(step 200, three times: the training is deterministic); greedy validation format 0 at steps 0-100, 0.062 at 150,
0.625 at 200 (10 of 16 answers valid; count 0.604, accuracy and spatial 0). GRPO (15 steps, 8 prompts x 8 at
temperature 0.6, three runs from the same warm start): training-rollout format 0.297, 0.188, 0.438 at steps
1-3 in every run (vLLM's unseeded sampler is itself deterministic until batching differs), then every step
between 0.19 and 0.53; mean of steps 1-5 -> mean of steps 11-15: 0.366 -> 0.409, 0.353 -> 0.419, 0.356 -> 0.438
(greedy validation in the second run: 0.625 at step 0, 0.375 at 5, 0.625 at 10, 0.812 at 15). A rise each
time, but +0.044, +0.066, +0.081 are within ~1.5 standard deviations of the difference of two 5-step means of 64
binary samples (~0.04): a rise margin would make the test flaky. It asserts what held in every measured run
and what a broken run fails: the warm start writes the format greedily (>= 0.5), GRPO samples from it (format
> 0.1 at every step; a random model: 0) and keeps it (last-5 mean >= first-5 mean - 0.1 and >= 0.3; the
collapse measured with token-mean, lr 5e-4, temperature 1.0 went 0.122 -> 0.006 and fails both).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_spatial.logging_sinks import CONSOLE_KEYS

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]
QUIET = ("logging.wandb_mode=disabled", "logging.tensorboard=false", "logging.progress_bar=false")
K = 5  # steps averaged at each end of the GRPO run
SFT_FORMAT_MIN = 0.5  # greedy validation format at step 200; measured 0.625
STEP_FORMAT_MIN = 0.1  # every GRPO step; measured minimum 0.188
MAX_DROP = 0.1  # last-K mean may sit at most this far below the first-K mean; measured +0.044, +0.066, +0.081
LAST_MIN = 0.3  # last-K mean of the training format; measured 0.409, 0.419, 0.438


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(module: str, config: str, *overrides: str) -> None:
    command = [sys.executable, "-m", module, "--config", config, *QUIET, *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]


def _mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def test_sft_warm_start_learns_the_format_and_grpo_keeps_it(tiny_model_dir, tmp_path):
    model = f"policy.hf_path={tiny_model_dir}"
    _run("nemo_spatial.sft", "conf/debug/tiny_cpu_sft.yaml", model, f"run.output_dir={tmp_path}")
    sft = _metrics(tmp_path / "tiny-cpu-sft")
    validations = [m for m in sft if "val/sft_loss" in m]
    assert [m["step"] for m in validations] == [0, 50, 100, 150, 200]
    assert validations[0]["val/reward/format/mean"] == 0.0 and validations[0]["val/sft_loss"] > 7.0  # random
    assert validations[-1]["val/sft_loss"] < 1.2  # measured 0.900
    assert validations[-1]["val/reward/format/mean"] >= SFT_FORMAT_MIN  # greedy; measured: see the docstring
    responses = [
        json.loads(line)["response"] for line in (tmp_path / "tiny-cpu-sft/validation/step_000200.jsonl").open()
    ]
    assert len(responses) == 8 and all(r.startswith("<observe>The question is about") for r in responses)
    assert all("</observe>\n<scene>{" in r for r in responses)  # the random model at step 0 writes neither

    init = f"policy.init_checkpoint={tmp_path / 'tiny-cpu-sft'}"
    _run("nemo_spatial.train", "conf/debug/tiny_cpu_demo.yaml", model, init, f"run.output_dir={tmp_path}")
    grpo = [m for m in _metrics(tmp_path / "tiny-cpu-demo") if "reward/format/mean" in m]
    assert [m["step"] for m in grpo] == list(range(1, 16))
    assert set(CONSOLE_KEYS) <= set(grpo[0])  # the progress bar shows metrics that exist (the KL's too)
    formats = [round(m["reward/format/mean"], 3) for m in grpo]
    # Every step samples from the SFT weights (synced before the first rollout) or later ones; a random model: 0.
    assert min(formats) > STEP_FORMAT_MIN, formats
    change = _mean(grpo[-K:], "reward/format/mean") - _mean(grpo[:K], "reward/format/mean")
    assert change >= -MAX_DROP, formats  # GRPO keeps the format (a rise is not reliable in 15 steps: docstring)
    assert _mean(grpo[-K:], "reward/format/mean") >= LAST_MIN, formats
    # A SpatialThinker rollout sample, what a person opens to see what the model does (the trainer's e2e runs use
    # another reward and a short prompt): the image, the prompt, each response's scene graph and reward components.
    sample_dir = tmp_path / "tiny-cpu-demo" / "rollouts" / "step_000005"
    sample = json.loads((sample_dir / "rollouts.json").read_text())
    assert (sample_dir / "image.png").stat().st_size > 0 and "Image size:" in sample["prompt"]
    assert len(sample["samples"]) == 8 and list(sample["samples"][0]) == ["response", "scene_graph", "reward", "error"]
    assert set(sample["samples"][0]["reward"]) == {"overall", "format", "count", "accuracy", "spatial"}
