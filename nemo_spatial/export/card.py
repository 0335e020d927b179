"""The model card (README.md) of an export: what the weights are and how they were made, from the run's own files.

Sources, all local: the run's `config.yaml` (resolved config), `run_info.json` (training command, git revision)
and `metrics.jsonl` (the last validation reward at or before the checkpoint's step).
Method: SFT when the config has an `sft` section (the SFT entry point's), otherwise GRPO named after the reward
preset: `spatialthinker` -> SpatialThinker GRPO (dense scene-graph reward), `r1v` -> vanilla GRPO (format +
accuracy), anything else -> GRPO with that preset.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from nemo_spatial.export.source import ExportSource

VAL_REWARD_KEY = "val/reward/overall/mean"
METHODS = {
    "spatialthinker": "SpatialThinker GRPO (dense scene-graph reward: format, count, accuracy, spatial)",
    "r1v": "vanilla GRPO (R1-V reward: format + accuracy)",
}


def training_method(config: dict[str, Any]) -> str:
    if "sft" in config:
        return "SFT (supervised fine-tuning)"
    preset = str(config.get("reward", {}).get("preset", ""))
    if not config:
        return "unknown (no config.yaml found next to the checkpoint)"
    return METHODS.get(preset, f"GRPO with the `{preset}` reward preset")


def last_validation_reward(run_dir: Path | None, step: int) -> tuple[int, float] | None:
    """(step, value) of the last `val/reward/overall/mean` logged at or before `step`, or None."""
    path = run_dir / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return None
    found: tuple[int, float] | None = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if VAL_REWARD_KEY in record and int(record.get("step", 0)) <= step:
            found = (int(record["step"]), float(record[VAL_REWARD_KEY]))
    return found


def model_card(source: ExportSource, dtype: str, command: list[str]) -> str:
    config = source.run_config
    data = config.get("data", {})
    trainer = config.get("trainer", {})
    reward = last_validation_reward(source.run_dir, source.step)
    run_info = _run_info(source.run_dir)
    layout = source.layout
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        f"base_model: {source.base.name}",
        "---",
        f"# {source.run_dir.name if source.run_dir else source.checkpoint.name} (step {source.step})",
        "",
        "Exported from a nemo-spatial Megatron checkpoint with `tools/megatron_to_hf.py`.",
        "",
        f"- Base model: `{source.base}`",
        f"- Method: {training_method(config)}",
        f"- Training data: `{data.get('train_files', 'unknown')}`; validation: `{data.get('val_files') or 'none'}`",
        f"- Steps: {source.step} of trainer.total_steps={trainer.get('total_steps', 'unknown')}",
        f"- Last validation reward ({VAL_REWARD_KEY}): "
        + (f"{reward[1]:.4f} at step {reward[0]}" if reward else "none logged"),
        f"- Checkpoint: `{source.checkpoint}` (saved at TP={layout['tensor']} PP={layout['pipeline']} "
        f"DP={layout['data']})",
        f"- Weights: {dtype}",
        f"- Training command: `{shlex.join(run_info.get('argv', [])) or 'unknown'}` "
        f"(git {run_info.get('git', 'unknown')})",
        f"- Export command: `{shlex.join(command)}`",
        "",
        "## Resolved training config",
        "",
        "```yaml",
        _yaml(config).rstrip() or "# no config.yaml found next to the checkpoint",
        "```",
        "",
    ]
    return "\n".join(lines)


def _run_info(run_dir: Path | None) -> dict[str, Any]:
    path = run_dir / "run_info.json" if run_dir else None
    if path is None or not path.is_file():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def _yaml(config: dict[str, Any]) -> str:
    if not config:
        return ""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config))
