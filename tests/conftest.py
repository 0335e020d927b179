import faulthandler
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key  # the fd pytest's own watchdog writes to
from pytest_timeout import _get_item_settings as _timeout_settings  # its parser of the mark (args, timeout=)

FAULTHANDLER_GRACE_S = 60  # the C watchdog fires this long after pytest-timeout's own limit


def _timeout_mark_seconds(item: pytest.Item) -> float | None:
    """A test's `timeout` mark in seconds, read as pytest-timeout itself reads it; None without a mark, or for
    0/None (no limit: the session-wide watchdog then stays, as the mark cannot say how long the test may run)."""
    if item.get_closest_marker("timeout") is None:
        return None
    seconds = _timeout_settings(item).timeout
    return float(seconds) if seconds is not None and seconds > 0 else None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Give faulthandler's watchdog (pyproject: faulthandler_timeout) a test's own `timeout` mark + 60 s.

    pytest arms the watchdog with one session-wide limit around setup, call and teardown, and it ends the whole
    run; a test marked with a longer pytest-timeout limit would be cut at the session-wide one instead of its
    own. trylast: this wrapper runs inside pytest's faulthandler wrapper, so it re-arms after it has armed.
    """
    limit = _timeout_mark_seconds(item)
    armed = (
        float(item.config.getini("faulthandler_timeout") or 0) > 0 and fault_handler_stderr_fd_key in item.config.stash
    )
    if limit is not None and armed:
        faulthandler.dump_traceback_later(
            limit + FAULTHANDLER_GRACE_S,
            file=item.config.stash[fault_handler_stderr_fd_key],
            exit=bool(item.config.getini("faulthandler_exit_on_timeout")),
        )
    return (yield)


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
