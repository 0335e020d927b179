"""--model resolution: HF dirs, hub names, training runs and their checkpoints (export via the export tool)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_spatial.errors import UserError
from nemo_spatial.eval.model_ref import export_checkpoint, label_for, resolve_model


def make_run(root: Path, steps: tuple[int, ...], complete: bool = True) -> Path:
    for step in steps:
        folder = root / "checkpoints" / f"step_{step:06d}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "COMPLETE").write_text("")
    return root


def test_hf_directory_and_hub_name(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve_model(str(model), "vllm").name == str(model)
    assert resolve_model("Qwen/Qwen2.5-VL-3B-Instruct", "hf").name == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert resolve_model("gpt-4o-2024-05-13", "openai").name == "gpt-4o-2024-05-13"
    with pytest.raises(UserError, match="no such directory"):
        resolve_model(str(tmp_path / "absent"), "vllm")
    with pytest.raises(UserError, match="without config.json"):
        resolve_model(str(tmp_path), "vllm")


def test_labels_skip_generic_parts() -> None:
    assert label_for("/runs/exp1/checkpoints/step_000005/hf") == "exp1-step_000005"
    assert label_for("/ckpt/global_step_75/actor/huggingface") == "ckpt-global_step_75"
    assert label_for("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen-Qwen2.5-VL-3B-Instruct"


def fake_tool(tmp_path: Path) -> Path:
    """A stand-in with the export tool's CLI (the real one is another issue's): writes OUT/config.json."""
    tool = tmp_path / "megatron_to_hf.py"
    tool.write_text(
        "import argparse, pathlib, json\n"
        "p = argparse.ArgumentParser()\n"
        "for flag in ('--checkpoint', '--out', '--dtype'):\n    p.add_argument(flag)\n"
        "a = p.parse_args(); out = pathlib.Path(a.out); out.mkdir(parents=True)\n"
        "(out / 'config.json').write_text(json.dumps({'from': a.checkpoint, 'dtype': a.dtype}))\n"
    )
    return tool


def test_run_and_step_resolve_to_the_export_of_that_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import nemo_spatial.eval.model_ref as model_ref

    run = make_run(tmp_path / "run", (5, 10))
    monkeypatch.setattr(model_ref, "EXPORT_TOOL", fake_tool(tmp_path))
    latest = resolve_model(str(run), "vllm")
    assert latest.name == str(run / "checkpoints" / "step_000010" / "hf")
    assert latest.checkpoint == str(run / "checkpoints" / "step_000010")
    chosen = resolve_model(str(run / "checkpoints" / "step_000005"), "vllm")
    assert chosen.name.endswith("step_000005/hf") and chosen.label == "run-step_000005"
    assert '"dtype": "bfloat16"' in (Path(chosen.name) / "config.json").read_text()


def test_export_is_reused_and_failures_are_clear(tmp_path: Path) -> None:
    step = make_run(tmp_path / "run", (1,)) / "checkpoints" / "step_000001"
    failing = tmp_path / "fail.py"
    failing.write_text("import sys; print('boom', file=sys.stderr); sys.exit(3)\n")
    with pytest.raises(UserError, match=r"(?s)exporting .* failed \(exit 3\).*boom"):
        export_checkpoint(step, failing)
    with pytest.raises(UserError, match="is missing"):
        export_checkpoint(step, tmp_path / "absent.py")
    (step / "hf").mkdir()
    (step / "hf" / "config.json").write_text("{}")
    assert export_checkpoint(step, tmp_path / "absent.py") == step / "hf"  # a finished export is reused


def test_incomplete_checkpoints_are_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", (3,), complete=False)
    with pytest.raises(UserError, match="incomplete"):
        resolve_model(str(run / "checkpoints" / "step_000003"), "vllm")
    with pytest.raises(UserError, match="no complete checkpoint"):
        resolve_model(str(run), "vllm")
