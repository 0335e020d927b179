from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nemo_spatial.data.config import DataConfig
from nemo_spatial.data.synth import write_dataset

SMALL_PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}  # <= 16 image tokens: fast CPU tests


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 train rows (two of each of the nine categories) and 9 val rows of synthetic STVQA data, seed 0."""
    return write_dataset(tmp_path_factory.mktemp("synth"), rows=18, seed=0, val_rows=9)


@pytest.fixture
def data_cfg(synth_dir: Path, tmp_path: Path) -> Callable[..., DataConfig]:
    """A DataConfig on the synthetic set with small images and no workers; keyword arguments override."""

    def make(**overrides: Any) -> DataConfig:
        values: dict[str, Any] = {
            "train_files": f"{synth_dir}@train",
            "val_files": f"{synth_dir}@val",
            "cache_dir": str(tmp_path / "cache"),
            "num_workers": 0,
            **SMALL_PIXELS,
        }
        return DataConfig(**(values | overrides))

    return make
