from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def session_vllm_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One vLLM cache directory for the whole session, in every process the tests start (VLLM_CACHE_ROOT).

    vLLM inspects a model class in a subprocess the first time it meets it and caches the answer (and any
    compile artefacts) there; sharing the directory lets every later server, engine and trainer run reuse it,
    while the user's ~/.cache/vllm is never written by the tests.
    """
    path = tmp_path_factory.mktemp("vllm-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CACHE_ROOT", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint (HF format, seed 0), built once per test session (~5 s).

    Shape and files: nemo_spatial/models/tiny.py. Treat it as read-only: tests share it.
    """
    from nemo_spatial.models.tiny import build_tiny_qwen25_vl

    return build_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny-qwen25vl"), seed=0)
