from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (HF format, seed 0), built once per test session (~5 s).

    Shape and files: nemo_spatial/models/tiny.py. Treat it as read-only: tests share it.
    """
    from nemo_spatial.models.tiny import build_tiny_qwen25_vl

    return build_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25vl"), seed=0)
