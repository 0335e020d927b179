"""`tools/megatron_to_hf.py` on real checkpoints of the tiny model saved at TP=1 (DP=2), TP=2 and PP=2.

What would fail: a tensor converted wrongly at some layout (the exported tensors must equal the ones the policy
held when it saved, exactly, in float32), a file transformers or vLLM needs missing, a run that cannot have
moved a weight exporting anything but the base model's bytes, `--check` passing a perturbed export, and any of
the documented errors not being raised with its message.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nemo_spatial.cli import run_main
from tests.e2e.export.conftest import EXPORTED, PERTURBED_TENSOR, STEP, export_dir, hf_state
from tests.e2e.export.runs import VAL_REWARD
from tools.megatron_to_hf import main

REPO = Path(__file__).resolve().parents[3]
# The session's runs and exports (conftest.py) are built in the setup of the first test that needs them: ~5 min on
# 2 idle cores, 10+ on a loaded machine, so the per-test limit (900 s, a hang guard) is raised for these.
pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.timeout(2400)]
# The order of conftest.exports' "main" steps.
CHECKED = dict(zip(EXPORTED, range(3), strict=True))
FROZEN = {"frozen_tp1": 3, "frozen_tp2": 4}
NOT_EMPTY, BF16, BF16_CHECK, MISMATCH, PERTURBED = 5, 6, 7, 8, 9


def exported_tensors(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(folder / shard))
    assert set(tensors) == set(index["weight_map"])
    return tensors


@pytest.mark.parametrize("name", EXPORTED)
def test_each_layout_exports_the_weights_it_saved(name, export_runs, exports):
    root, weights = export_runs
    status, output = exports["main"][CHECKED[name]]
    assert status == 0, output
    folder = export_dir(root, name)
    tensors = exported_tensors(folder)
    assert set(tensors) == set(weights[name])
    for key, tensor in weights[name].items():
        assert torch.equal(tensors[key], tensor), key
    # transformers loads it as it loads Qwen/Qwen2.5-VL-*: every tensor used, nothing missing, the same values.
    state = hf_state(folder)
    assert set(state) == set(tensors)
    for key, tensor in state.items():
        assert torch.equal(tensor, tensors[key]), key
    # a training run started from the export (policy.hf_path=OUT) holds the same weights
    started = exports["policy"][str(folder)]
    assert set(started) == set(weights[name])
    assert all(torch.equal(started[key], weights[name][key]) for key in started)
    assert "check passed: max |logit diff| = " in output and "megatron greedy:" in output
    assert f"wrote {folder}: 57 tensors" in output


def test_the_export_holds_what_transformers_and_the_eval_need(export_runs, exports, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root, _ = export_runs
    folder = export_dir(root, "tp2")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "processor_config.json", "model.safetensors.index.json", "README.md"} <= names  # fmt: skip
    assert not any(name.startswith(("shard-", f"{STEP}.tmp")) for name in names)
    assert not [p for p in folder.parent.iterdir() if p.name != STEP]  # no staging folder left beside it
    AutoModelForImageTextToText.from_pretrained(str(folder))
    processor = AutoProcessor.from_pretrained(str(folder))
    assert (
        processor.tokenizer.chat_template
        == AutoProcessor.from_pretrained(str(root / "tp2" / "hf" / STEP)).tokenizer.chat_template
    )
    card = (folder / "README.md").read_text()
    assert "SpatialThinker GRPO" in card and f"{VAL_REWARD:.4f} at step 1" in card
    assert "saved at TP=2 PP=1" in card and "synthetic:8:0@train" in card and "--checkpoint" in card
    assert "policy:\n  hf_path:" in card  # the resolved config


@pytest.mark.parametrize("name", ["frozen_tp1", "frozen_tp2"])
def test_a_run_that_cannot_move_a_weight_exports_the_base_model(name, export_runs, exports, tiny_model_dir):
    root, _ = export_runs
    status, output = exports["main"][FROZEN[name]]
    assert status == 0, output
    base = load_file(tiny_model_dir / "model.safetensors")
    tensors = exported_tensors(export_dir(root, name))
    assert set(tensors) == set(base)
    assert all(torch.equal(tensors[key], base[key]) for key in base)


def test_the_trainers_export_equals_the_commands(export_runs, exports):
    root, _ = export_runs
    by_trainer = exported_tensors(root / "tp2" / "trainer_export")
    by_command = exported_tensors(export_dir(root, "tp2"))
    assert set(by_trainer) == set(by_command)
    assert all(torch.equal(by_trainer[key], by_command[key]) for key in by_command)


def test_bfloat16_export_overwrites_and_checks_within_its_tolerance(export_runs, exports):
    root, weights = export_runs
    for step in (BF16, BF16_CHECK):
        status, output = exports["main"][step]
        assert status == 0, output
    assert "tolerance" in exports["main"][BF16_CHECK][1] and "for bfloat16" in exports["main"][BF16_CHECK][1]
    tensors = exported_tensors(root / "bf16")
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    key = PERTURBED_TENSOR
    assert torch.equal(tensors[key], weights["tp1"][key].to(torch.bfloat16))
    assert json.loads((root / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_check_fails_on_a_perturbed_tensor_with_the_figure(exports):
    status, output = exports["main"][PERTURBED]
    assert status == 1, output
    assert "check FAILED: max |logit diff| = " in output
    figure = float(output.split("max |logit diff| = ")[1].split()[0])
    assert figure > 1e-3


def test_errors_name_the_path_and_the_fix(export_runs, exports):
    root, _ = export_runs
    status, output = exports["main"][NOT_EMPTY]
    assert status == 2 and "exists and is not empty; choose another --out or pass --overwrite" in output
    status, output = exports["main"][MISMATCH]
    assert status == 2, output
    # the first mismatching tensor: the MLP's down projection of both layers, intermediate size 256 vs 384
    assert "does not match the checkpoint" in output
    first = r"tensor \S+\.linear_fc2\.weight is \[2, 128, 256\] in the checkpoint and \[2, 128, 384\] in the base model"
    assert re.search(first, output), output
    assert not (root / "mismatch").exists()


def test_not_a_checkpoint_and_an_interrupted_save(export_runs, tmp_path, capsys):
    root, _ = export_runs
    assert run_main(main, ["--checkpoint", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a policy checkpoint" in capsys.readouterr().err
    staging = root / "tp1" / "checkpoints" / "step_000002.tmp"  # what an interrupted save leaves
    (staging / "policy.partial").mkdir(parents=True)
    try:
        assert run_main(main, ["--checkpoint", str(staging)]) == 2
        err = capsys.readouterr().err
        assert (
            "is an incomplete checkpoint" in err
            and f"export the last complete one, {root / 'tp1' / 'checkpoints' / STEP}" in err
        )
    finally:
        staging.rename(tmp_path / "moved")


def test_not_enough_disk_is_refused_before_writing(export_runs, exports, tmp_path, monkeypatch, capsys):
    import nemo_spatial.export.source as source

    root, _ = export_runs
    monkeypatch.setattr(source, "free_bytes", lambda path: 1_000_000)  # 1 MB free; the tiny export needs 4.4 MB
    out = tmp_path / "small-disk"
    assert run_main(main, ["--checkpoint", str(root / "tp2"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"not enough disk for the export to {out}: it needs 4.7 MB and 1.0 MB is free" in err
    assert not out.exists()


def test_the_script_runs_as_a_command(export_runs, exports, tmp_path):
    """`python tools/megatron_to_hf.py` in a fresh process, at --nproc 2 (the export itself at TP=2)."""
    root, weights = export_runs
    out = tmp_path / "nproc2"
    command = [sys.executable, "tools/megatron_to_hf.py", "--checkpoint", str(root / "pp2"), "--out", str(out)]
    done = subprocess.run([*command, "--nproc", "2"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}: 57 tensors" in done.stdout and " MB in " in done.stdout
    tensors = exported_tensors(out)
    assert all(torch.equal(tensors[key], weights["pp2"][key]) for key in weights["pp2"])
