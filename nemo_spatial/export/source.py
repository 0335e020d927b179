"""Which checkpoint an export reads, and everything checked before a byte is written.

    source = resolve_source("RUN/checkpoints/step_000010", base=None)   # or RUN: its latest checkpoint
    target = prepare_output(out, overwrite=False)                       # refuses a non-empty directory
    check_free_space(out, expected_bytes)

A checkpoint is the trainer's `step_N/` (nemo_spatial/checkpoint.py: `COMPLETE`, `trainer_state.pt`,
`policy/nemo_spatial_policy.json` which records the TP/PP/DP layout it was saved at) or the policy folder
inside it. The run directory (two levels up) holds `config.yaml`, whose `policy.hf_path` names the base model
whose config, tokenizer and processor the export copies; `--base DIR` overrides it when the run moved.
Every failure is a UserError naming the path and the fix.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_spatial.errors import UserError

COMPLETE_MARKER = "COMPLETE"  # nemo_spatial/checkpoint.py
POLICY_DIR = "policy"
POLICY_MARKER = "nemo_spatial_policy.json"  # nemo_spatial/models/qwen25_vl/checkpoint.py
# Staging names of an interrupted save: the trainer's `step_N.tmp`, fileio's `.tmp-<pid>`, the policy's `.partial`.
STAGING = re.compile(r"(\.tmp(-\d+)?|\.partial)$")
DISK_MARGIN = 1.05  # safetensors headers, the index and filesystem blocks


@dataclass(frozen=True)
class ExportSource:
    """A complete checkpoint, the run it belongs to and the base model its files come from."""

    checkpoint: Path  # step_N/ (or the policy folder when given alone)
    policy_dir: Path  # the Megatron dist checkpoint
    step: int
    layout: dict[str, int]  # tensor / pipeline / data sizes it was saved with
    base: Path
    run_dir: Path | None
    run_config: dict[str, Any] = field(default_factory=dict)


def resolve_source(path: str | Path, base: str | Path | None = None) -> ExportSource:
    """The checkpoint named by `path` (a step_N folder, its policy folder, or a run directory: its latest)."""
    checkpoint = _checkpoint_folder(Path(path))
    policy_dir = checkpoint / POLICY_DIR if (checkpoint / POLICY_DIR).is_dir() else checkpoint
    info = json.loads((policy_dir / POLICY_MARKER).read_text())
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    if policy_dir == checkpoint and checkpoint.parent.parent.name == "checkpoints":
        run_dir = checkpoint.parent.parent.parent
    run_config = _read_run_config(run_dir)
    return ExportSource(
        checkpoint=checkpoint,
        policy_dir=policy_dir,
        step=int(info["step"]),
        layout={key: int(info[key]) for key in ("tensor", "pipeline", "data")},
        base=_base_model(base, run_config, run_dir),
        run_dir=run_dir,
        run_config=run_config,
    )


def _checkpoint_folder(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"--checkpoint {path} does not exist; pass RUN/checkpoints/step_N or a run directory")
    if (path / "checkpoints").is_dir():  # a run directory: its latest complete checkpoint
        complete = sorted(p for p in (path / "checkpoints").glob("step_*") if (p / COMPLETE_MARKER).is_file())
        if not complete:
            raise UserError(
                f"the run {path} has no complete checkpoint under {path / 'checkpoints'}; pass one with "
                "--checkpoint RUN/checkpoints/step_N, or let the run save one (trainer.save_every)"
            )
        return complete[-1]
    if STAGING.search(path.name) or (path.name.startswith("step_") and not (path / COMPLETE_MARKER).is_file()):
        latest = _latest_complete(path.parent)
        hint = f"export the last complete one, {latest}" if latest else "export a complete checkpoint"
        raise UserError(
            f"{path} is an incomplete checkpoint (the staging folder of an interrupted save, no {COMPLETE_MARKER} "
            f"marker); {hint}"
        )
    if (path / POLICY_MARKER).is_file():  # the policy folder itself
        return path
    if (path / POLICY_DIR / POLICY_MARKER).is_file():
        return path
    raise UserError(
        f"{path} is not a policy checkpoint (no {POLICY_DIR}/{POLICY_MARKER}); pass RUN/checkpoints/step_N "
        "(a folder with COMPLETE and policy/) or the run directory"
    )


def _latest_complete(folder: Path) -> Path | None:
    complete = sorted(p for p in folder.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).is_file())
    return complete[-1] if complete else None


def _read_run_config(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    return loaded if isinstance(loaded, dict) else {}  # type: ignore[return-value]


def _base_model(base: str | Path | None, run_config: dict[str, Any], run_dir: Path | None) -> Path:
    if base is not None:
        chosen, origin = Path(base), "--base"
    else:
        recorded = str(run_config.get("policy", {}).get("hf_path", "") or "")
        if not recorded:
            where = f"{run_dir / 'config.yaml'} has no policy.hf_path" if run_dir else "no run config.yaml found"
            raise UserError(
                f"cannot tell the base model ({where}); pass --base DIR (the HF model the run started from)"
            )
        chosen, origin = Path(recorded), f"policy.hf_path in {run_dir / 'config.yaml' if run_dir else 'config'}"
    if not (chosen / "config.json").is_file():
        raise UserError(
            f"the base model {chosen} ({origin}) is not a Hugging Face model directory (no config.json); "
            "pass --base DIR with the model the run was trained from"
        )
    return chosen


def default_output(source: ExportSource) -> Path:
    """`<run>/hf/step_N` (where the trainer's own exports go), or `<checkpoint>-hf` outside a run."""
    if source.run_dir is not None:
        return source.run_dir / "hf" / source.checkpoint.name
    return source.checkpoint.with_name(source.checkpoint.name + "-hf")


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output directory unless `--overwrite` (then it is replaced at the end)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty; choose another --out or pass --overwrite to replace it")


def free_bytes(path: Path) -> int:
    """Free space on the filesystem that will hold `path` (its nearest existing parent)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_free_space(out: Path, expected_bytes: int, free: int | None = None) -> None:
    """Refuse to start an export that cannot fit (checked before anything is written)."""
    needed = int(expected_bytes * DISK_MARGIN)
    available = free_bytes(out) if free is None else free
    if available < needed:
        raise UserError(
            f"not enough disk for the export to {out}: it needs {human_bytes(needed)} and "
            f"{human_bytes(available)} is free; free space there or choose --out on another filesystem"
        )


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.2f} TB"
