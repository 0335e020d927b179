"""`make demo`'s two runs as a user starts them: an SFT warm start of the tiny model on synthetic data, then
SpatialThinker-recipe GRPO from its checkpoint (policy.init_checkpoint).

Measured on the 2-core machine (README, Quick start, has the trial log). SFT: validation loss 7.654 -> 0.900
(step 200, in every run: the training is deterministic); greedy validation format 0 at steps 0-100, 0.062 at
150, 0.625 at 200 (10 of 16 answers valid; count 0.604, accuracy and spatial 0). GRPO: 24 steps of 8 prompts x 8
at temperature 0.6, three passes over the 64 training prompts. The rise is measured pass against pass: the same
64 prompts, 512 samples a pass, so the prompts' own difficulty (a single step's 8 prompts swing the format
between 0.17 and 0.70) cancels; the sampling noise, given the policies sampled from, is at most
sqrt(2 x 0.25 / 512) = 0.031 on the difference of two pass means (how far training moves the policy varies
from run to run too: the measured rises spread by 0.011). Training format, pass 1 -> pass 3, four runs:
0.340 -> 0.527, 0.363 -> 0.562, 0.354 -> 0.551, 0.322 -> 0.514 (+0.188, +0.199, +0.197, +0.191; count rose with
it by +0.170, +0.159, +0.107, +0.161). The test asserts the warm start's greedy format, that GRPO samples from it
at every step (a random model never writes the format), and the rise with a margin 3 standard deviations below
the smallest measured rise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_spatial.logging_sinks import CONSOLE_KEYS

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # 802 s idle, 1,467 s in a contended full suite
QUIET = ("logging.wandb_mode=disabled", "logging.tensorboard=false", "logging.progress_bar=false")
SFT_FORMAT_MIN = 0.5  # greedy validation format at step 200; measured 0.625
PASS_STEPS = 8  # GRPO steps in one pass over the 64 training prompts (8 a step)
STEP_FORMAT_MIN = 0.1  # every GRPO step; measured minimum 0.172
FORMAT_RISE_MIN = 0.09  # pass 3 - pass 1 of the training format; measured +0.188 to +0.199 in 4 runs (sd <= 0.031)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(module: str, config: str, *overrides: str) -> None:
    command = [sys.executable, "-m", module, "--config", config, *QUIET, *overrides]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]


def _pass_means(rows: list[dict], key: str) -> list[float]:
    """The mean of `key` over each pass of the training prompts (PASS_STEPS consecutive steps)."""
    passes = [rows[i : i + PASS_STEPS] for i in range(0, len(rows), PASS_STEPS)]
    return [sum(row[key] for row in one) / len(one) for one in passes]


def test_sft_warm_start_learns_the_format_and_grpo_raises_it(tiny_model_dir, tmp_path):
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
    assert [m["step"] for m in grpo] == list(range(1, 25))
    # Each pass is exactly one epoch of the 64 prompts, every group scored: no row skipped (it would shift the
    # epochs' boundaries), no group dropped or left unused (a step's mean would then leave prompts out).
    assert [m["data/epoch"] for m in grpo[PASS_STEPS - 1 :: PASS_STEPS]] == [1, 2, 3]
    assert not [key for key in grpo[-1] if key.startswith("data/skipped_")]
    assert all(m["rollout/dropped_groups"] == 0 == m["rollout/unused_groups"] for m in grpo)
    assert set(CONSOLE_KEYS) <= set(grpo[0])  # the progress bar shows metrics that exist (the KL's too)
    formats = [round(m["reward/format/mean"], 3) for m in grpo]
    # Every step samples from the SFT weights (synced before the first rollout) or later ones; a random model: 0.
    assert min(formats) > STEP_FORMAT_MIN, formats
    passes = _pass_means(grpo, "reward/format/mean")
    assert passes[-1] - passes[0] >= FORMAT_RISE_MIN, (passes, formats)
    # A SpatialThinker rollout sample, what a person opens to see what the model does (the trainer's e2e runs use
    # another reward and a short prompt): the image, the prompt, each response's scene graph and reward components.
    sample_dir = tmp_path / "tiny-cpu-demo" / "rollouts" / "step_000008"
    sample = json.loads((sample_dir / "rollouts.json").read_text())
    assert (sample_dir / "image.png").stat().st_size > 0 and "Image size:" in sample["prompt"]
    assert len(sample["samples"]) == 8 and list(sample["samples"][0]) == ["response", "scene_graph", "reward", "error"]
    assert set(sample["samples"][0]["reward"]) == {"overall", "format", "count", "accuracy", "spatial"}
