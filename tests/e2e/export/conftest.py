"""The export tests' runs (built once per session: one group of 2 gloo processes) and their exports (one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nemo_spatial.models.tiny import TinyShape, build_tiny_qwen25_vl
from nemo_spatial.parallel.launch import spawn
from tests.e2e.export.runs import RUNS, export_steps, make_runs

STEP = "step_000001"
PERTURBED_TENSOR = "model.layers.0.mlp.down_proj.weight"  # the names of the base checkpoint (tiny.py)
EXPORTED = ("tp1", "tp2", "pp2")


def export_dir(root: Path, name: str) -> Path:
    return root / name / "hf" / STEP


@pytest.fixture(scope="session")
def export_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(root, {run name: the HF weights its policy held at the save}) for every run in runs.RUNS."""
    root = tmp_path_factory.mktemp("export-runs")
    weights = spawn(make_runs, nprocs=2, args=(str(tiny_model_dir), str(root), list(RUNS)))[0]
    return root, weights


@pytest.fixture(scope="session")
def exports(export_runs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every export the tests look at, made by the command's main in one process, in this order."""
    root, _ = export_runs
    other_base = build_tiny_qwen25_vl(tmp_path_factory.mktemp("wider-base"), shape=TinyShape(intermediate_size=384))
    perturbed = root / "perturbed"
    steps: list[tuple[str, Any]] = [("main", ["--checkpoint", str(root / name), "--check"]) for name in EXPORTED]
    steps += [("main", ["--checkpoint", str(root / name)]) for name in ("frozen_tp1", "frozen_tp2")]
    bf16 = ["--checkpoint", str(root / "tp1"), "--overwrite", "--dtype", "bfloat16", "--out", str(root / "bf16")]
    steps += [
        ("main", ["--checkpoint", str(root / "pp2")]),  # again: its output is not empty now
        ("main", bf16),
        ("main", [*bf16, "--check"]),  # --overwrite replaces the first one
        ("main", ["--checkpoint", str(root / "tp2" / "checkpoints" / STEP), "--base", str(other_base),
                  "--out", str(root / "mismatch")]),
        ("copy", (str(export_dir(root, "tp2")), str(perturbed))),
        ("perturb", (str(perturbed / "model-00001-of-00001.safetensors"), PERTURBED_TENSOR)),
        ("main", ["--checkpoint", str(root / "tp2"), "--out", str(perturbed), "--check-only"]),
        *(("policy", str(export_dir(root, name))) for name in EXPORTED),
    ]  # fmt: skip
    results = spawn(export_steps, nprocs=1, args=(steps,))[0]
    return {**results, "root": root}


def hf_state(path: Path) -> dict[str, torch.Tensor]:
    """transformers' model loaded from `path` (nothing missing, unexpected or mismatched), by checkpoint name.

    transformers 5 renames Qwen2.5-VL's checkpoint keys on load (`model.layers.` -> `model.language_model.layers.`,
    `visual.` -> `model.visual.`); the names are mapped back so they compare with the files' tensors.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), dtype="auto", output_loading_info=True)
    assert not any(info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    renamed = (("model.language_model.", "model."), ("model.visual.", "visual."))
    state = {}
    for name, tensor in model.state_dict().items():
        for new, old in renamed:
            name = name.replace(new, old, 1) if name.startswith(new) else name
        state[name] = tensor.detach().clone()
    return state
