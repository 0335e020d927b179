"""A generation server process this trainer spawned: start, wait until ready, watch, read its log, stop.

The server runs in its own process session with its output in a log file, so its death is seen by
`poll()` (not only by a failed request), the error the trainer raises carries the log's tail, and
`stop()` ends the server and every process it started (the vLLM engine core and workers) by its
process-group id, then removes the shared-memory files those processes left (shm_cleanup.py; also before
each start, for what a killed trainer could not remove).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import requests

from nemo_spatial.generation.config import GenerationConfig
from nemo_spatial.generation.shm_cleanup import ShmTracker
from nemo_spatial.generation.types import GeneratorUnavailableError
from nemo_spatial.generation.watchdog import PARENT_PID_ENV
from nemo_spatial.net import free_port

LOG_TAIL_LINES = 60
DEFAULT_CPU_KV_CACHE_GB = 2.0


def server_command(cfg: GenerationConfig, model_dir: str, port: int, extra_args: list[str] | None = None) -> list[str]:
    """The command line of `python -m nemo_spatial.generation.serve` for this config."""
    command = [
        sys.executable,
        "-m",
        "nemo_spatial.generation.serve",
        "--model",
        str(model_dir),
        "--host",
        cfg.host,
        "--port",
        str(port),
        "--dtype",
        cfg.dtype,
        "--max-model-len",
        str(cfg.max_model_len),
        "--max-num-seqs",
        str(cfg.max_num_seqs),
        "--tensor-parallel-size",
        str(cfg.tensor_parallel_size),
        "--logprobs-mode",
        cfg.logprobs_mode,
        "--gpu-memory-utilization",
        str(cfg.gpu_memory_utilization),
        "--disable-uvicorn-access-log",
    ]
    kv_cache_gb = cfg.kv_cache_gb or (0.0 if _cuda_visible() else DEFAULT_CPU_KV_CACHE_GB)
    if kv_cache_gb:
        command += ["--kv-cache-memory-bytes", str(int(kv_cache_gb * 1024**3))]
    if cfg.enforce_eager:
        command.append("--enforce-eager")
    if cfg.placement == "colocated" and _cuda_visible():
        command.append("--enable-sleep-mode")  # vLLM's CPU build refuses the flag ("not supported on current platform")
    return command + list(extra_args or [])


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


class ServerProcess:
    """One spawned server; `url` is where it answers once `wait_ready` returned."""

    def __init__(
        self,
        cfg: GenerationConfig,
        model_dir: str,
        log_path: str | Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.port = cfg.port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.shm = ShmTracker(self.log_path.with_name(self.log_path.name + ".shm-files"))

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"the generation server at {self.url} is already running (pid {self.pid})")
        self.port = self.cfg.port or free_port(self.cfg.host)
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.shm.clean()  # what an earlier server of this run left (a SIGKILLed trainer could not clean)
        # The server exits when this process dies (see watchdog.py), even on SIGKILL.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid()), **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        self.starts += 1
        self.shm.watch(self.proc.pid)

    def command(self) -> list[str]:
        """The server's command line for the current port (tests start other small HTTP servers here)."""
        return server_command(self.cfg, self.model_dir, self.port, self.extra_args)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the server answers /nemo/v1/health; raise with the log tail if it dies or times out."""
        deadline = time.monotonic() + (timeout_s or self.cfg.startup_timeout_s)
        while time.monotonic() < deadline:
            if not self.alive():
                raise GeneratorUnavailableError(
                    f"the generation server exited with code {self.exit_code()} while starting", self.log_tail()
                )
            try:
                response = requests.get(f"{self.url}/nemo/v1/health", timeout=self.cfg.health_timeout_s)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        raise GeneratorUnavailableError(
            f"the generation server at {self.url} was not ready within {timeout_s or self.cfg.startup_timeout_s:.0f} s "
            "(raise generation.startup_timeout_s if the machine is slow)",
            self.log_tail(),
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except OSError as error:
            return f"(no log at {self.log_path}: {error})"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `timeout_s`; waits for the exit."""
        if self.proc is None:
            return
        self.shm.stop_watching()
        self.shm.observe(self.proc.pid)
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        # Workers of a killed server can outlive it in the group; end them too.
        self._signal_group(signal.SIGKILL)
        self.shm.clean()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
