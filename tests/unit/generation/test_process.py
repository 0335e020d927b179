"""The spawned-server lifecycle without an engine: command line, a start that fails, its log tail, stop."""

from __future__ import annotations

import time

import pytest

from nemo_spatial.generation import GenerationConfig, GeneratorUnavailableError
from nemo_spatial.generation.process import ServerProcess, server_command
from nemo_spatial.generation.serve import with_project_defaults


def test_server_command_carries_the_config() -> None:
    cfg = GenerationConfig(dtype="float32", max_model_len=4096, kv_cache_gb=0.5, enforce_eager=True)
    command = server_command(cfg, "/models/policy", 8123)
    assert command[1:3] == ["-m", "nemo_spatial.generation.serve"]
    joined = " ".join(command)
    for part in ("--model /models/policy", "--host 127.0.0.1", "--port 8123", "--dtype float32",
                 "--max-model-len 4096", f"--kv-cache-memory-bytes {512 * 1024**2}", "--enforce-eager",
                 "--logprobs-mode processed_logprobs"):  # fmt: skip
        assert part in joined


def test_serve_adds_project_defaults_only_where_missing() -> None:
    argv = with_project_defaults(["--model", "m", "--host=0.0.0.0"])
    assert argv.count("--host") == 0 and "--host=0.0.0.0" in argv
    assert argv[argv.index("--worker-extension-cls") + 1].endswith("worker_extension.NemoWorkerExtension")
    assert '"backend": "nemo"' in argv[argv.index("--weight-transfer-config") + 1]


@pytest.mark.slow  # imports vLLM in the child (~15-30 s on 2 busy cores)
def test_a_server_that_cannot_start_is_reported_with_its_log_tail(tmp_path) -> None:
    cfg = GenerationConfig(startup_timeout_s=120.0)
    process = ServerProcess(cfg, str(tmp_path / "no-such-model"), tmp_path / "logs" / "server.log")
    process.start()
    started = time.monotonic()
    try:
        with pytest.raises(GeneratorUnavailableError, match="exited with code 2 while starting") as error:
            process.wait_ready()
    finally:
        process.stop()
    assert "is not a directory holding a Hugging Face checkpoint" in error.value.log_tail
    assert time.monotonic() - started < 120 and not process.alive()
