"""The paper's numbers (arXiv 2511.07403 v2, Tables 1-4; upstream-facts.md and eval-spec section 8), and
which rows a report sets beside a model: the same base model's (Qwen2.5-VL-3B or -7B, found from the
checkpoint's config.json) and SpatialThinker's of that size, or the API model's own row.
"""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (
    "3DSRB", "CV-2D", "CV-3D", "BLINK-Rel", "BLINK-Depth", "MMVP", "SRE", "SpatialBench", "STVQA", "RWQA", "HallB",
    "MM-Star", "V*", "MME-RW-Lite", "RoboSpatial-Home", "MindCube-tiny",
)  # fmt: skip
_N = None
_ROWS: dict[str, tuple[float | None, ...]] = {
    "Qwen2.5-VL-3B": (44.0, 59.9, 60.2, 66.4, 54.0, 67.0, 68.0, 49.9, 74.3, 58.2, 46.3, 55.9, 74.9, 41.9, 58.7, 36.4),
    "Qwen2.5-VL-3B + SFT": (50.8, 53.9, 68.4, 65.0, 66.9, 62.7, 67.5, 56.3, 85.6, 64.8, 58.9, 53.9, 73.3, 43.0, 69.8,
                            35.9),
    "Qwen2.5-VL-3B + vanilla GRPO": (50.1, 70.6, 66.6, 73.4, 55.6, 68.3, 69.3, 56.9, 86.7, 64.4, 59.0, 56.7, 74.3,
                                     46.7, 64.0, 38.8),
    "SpatialThinker-3B": (52.9, 71.0, 76.3, 81.8, 66.9, 69.0, 76.5, 61.5, 92.5, 66.3, 62.5, 57.6, 78.0, 46.5, 70.6,
                          40.5),
    "Qwen2.5-VL-7B": (48.4, 69.1, 68.0, 84.0, 52.4, 72.3, 70.6, 62.5, 77.5, 68.4, 52.9, 63.9, 75.9, 44.1, 70.6, 35.3),
    "Qwen2.5-VL-7B + SFT": (53.6, 56.1, 71.3, 75.5, 64.5, 68.3, 70.8, 63.5, 84.5, 65.4, 66.2, 63.2, 78.0, 47.4, 72.4,
                            42.2),
    "Qwen2.5-VL-7B + vanilla GRPO": (54.7, 68.9, 76.5, 80.4, 75.0, 74.3, 79.6, 64.2, 87.1, 66.6, 60.7, 63.4, 73.9,
                                     46.3, 76.2, 44.0),
    "SpatialThinker-7B": (56.4, 77.7, 78.7, 86.0, 72.6, 78.0, 82.7, 66.4, 92.8, 69.2, 66.4, 65.9, 81.7, 48.3, 76.3,
                          45.1),
    "SpatialThinker-30B": (62.1, 80.3, 93.6, 88.1, 79.8, 79.7, 92.6, 69.5, 93.0, 74.9, 75.2, 66.9, 85.9, 49.2, 78.1,
                           45.4),
    "GPT-4o": (44.3, 75.8, 83.0, 82.5, 78.2, 70.7, 85.8, 67.0, 77.0, 75.4, 55.0, 64.7, 66.0, 51.6, 68.4, 34.9),
    "GPT-5": (_N,) * 11 + (58.9, 73.3, 57.0, 71.5, 42.5),
    "Claude-4-Sonnet": (_N,) * 11 + (64.4, 60.7, 46.9, 69.7, 44.8),
}  # fmt: skip
PAPER: dict[str, dict[str, float]] = {
    model: {c: v for c, v in zip(COLUMNS, values, strict=True) if v is not None} for model, values in _ROWS.items()
}
HIDDEN_SIZE_TO_BASE = {2048: "3B", 3584: "7B"}


def paper_rows(model: str, override: list[str] | None = None) -> list[str]:
    """The paper rows to show beside `model` (a directory or a name); `override` names them explicitly."""
    if override:
        unknown = [m for m in override if m not in PAPER]
        if unknown:
            from nemo_spatial.errors import UserError

            known = ", ".join(PAPER)
            raise UserError(f"--paper-model {', '.join(unknown)} is not in the paper's table; known: {known}")
        return override
    lowered = model.lower()
    for name, key in (("gpt-4o", "GPT-4o"), ("gpt-5", "GPT-5"), ("sonnet-4", "Claude-4-Sonnet"),
                      ("claude-4-sonnet", "Claude-4-Sonnet")):  # fmt: skip
        if name in lowered:
            return [key]
    size = _base_size(model)
    if size is None:
        return []
    return [f"Qwen2.5-VL-{size}", f"SpatialThinker-{size}"]


def _base_size(model: str) -> str | None:
    config = Path(model) / "config.json"
    if config.is_file():
        try:
            loaded = json.loads(config.read_text())
        except json.JSONDecodeError:
            return None
        hidden = loaded.get("hidden_size") or loaded.get("text_config", {}).get("hidden_size")
        return HIDDEN_SIZE_TO_BASE.get(hidden) if isinstance(hidden, int) else None
    for size in ("3B", "7B", "30B"):
        if f"-{size.lower()}" in model.lower():
            return size if size != "30B" else None
    return None
