"""`--model`: a Hugging Face directory, a hub name, an API model name, or a training run's checkpoint.

- A directory with `config.json`: used as is.
- `RUN` (a directory with `checkpoints/`): its newest complete checkpoint (`checkpoint.latest_checkpoint`);
  `RUN/checkpoints/step_N`: that one. Either is exported once to `step_N/hf/` by the export tool
  (`python tools/megatron_to_hf.py --checkpoint CKPT --out DIR --dtype bfloat16`, run as a subprocess) and the
  export is reused while its `config.json` is there.
- `owner/name` that is not a local path: a hub name, passed to the backend (which downloads it when it can).
- openai / anthropic: the API's model name.
The label names the output folder (`outputs/eval/<label>/`): the last two path components that are not
generic (`hf`, `huggingface`, `actor`, `checkpoints`), so merged checkpoints do not all write to one name
(upstream's `{dataset}_huggingface.json`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nemo_spatial.errors import UserError

GENERIC_PARTS = {"hf", "huggingface", "actor", "checkpoints", "hf_export"}
EXPORT_TOOL = Path(__file__).resolve().parents[2] / "tools" / "megatron_to_hf.py"


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the backend loads: a directory or a hub / API name
    label: str  # the output folder's name
    checkpoint: str | None = None  # the training checkpoint it was exported from


def label_for(model: str) -> str:
    parts = [p for p in Path(model).parts if p not in ("/", ".", "..") and p not in GENERIC_PARTS]
    label = "-".join(parts[-2:]) if parts else "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def resolve_model(model: str, backend: str) -> ModelRef:
    if backend in ("openai", "anthropic"):
        return ModelRef(model, label_for(model))
    path = Path(model)
    if (path / "config.json").is_file():
        return ModelRef(str(path), label_for(str(path.resolve())))
    step = checkpoint_step(path)
    if step is not None:
        exported = export_checkpoint(step)
        return ModelRef(str(exported), label_for(str(step.resolve())), str(step))
    if path.exists():
        raise UserError(
            f"--model {model}: a directory without config.json that is neither a training run (no checkpoints/) "
            "nor a checkpoint (RUN/checkpoints/step_N); give a Hugging Face model directory"
        )
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model) and not model.startswith("."):
        return ModelRef(model, label_for(model))
    raise UserError(f"--model {model}: no such directory, and not a hub name (owner/name)")


def checkpoint_step(path: Path) -> Path | None:
    """The checkpoint folder `path` names (a run or one of its steps), or None when it names neither."""
    from nemo_spatial.checkpoint import COMPLETE_MARKER, latest_checkpoint

    if path.name.startswith("step_") and path.parent.name == "checkpoints" and path.is_dir():
        if not (path / COMPLETE_MARKER).is_file():
            raise UserError(f"--model {path}: this checkpoint is incomplete (no {COMPLETE_MARKER} marker)")
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise UserError(f"--model {path}: the run has no complete checkpoint under {path / 'checkpoints'}")
        return latest
    return None


def export_checkpoint(step: Path, tool: Path | None = None) -> Path:
    """`step/hf/`, exported by the export tool unless a finished export is there already."""
    tool = tool or EXPORT_TOOL
    out = step / "hf"
    if (out / "config.json").is_file():
        return out
    if not tool.is_file():
        raise UserError(f"--model {step} is a training checkpoint, and exporting it needs {tool}, which is missing")
    command = [sys.executable, str(tool), "--checkpoint", str(step), "--out", str(out), "--dtype", "bfloat16"]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "config.json").is_file():
        raise UserError(
            f"exporting {step} to {out} failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}"
        )
    return out
