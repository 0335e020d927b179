"""`ServerGenerator`: the trainer's generator backed by the generation server (spawned here or running at a URL).

What it does beyond HTTP calls:
- Versioning: it remembers the version it last pushed and refuses (StaleRolloutError) a batch whose
  rollouts were sampled with another one, e.g. after a server restarted from its checkpoint.
- Failure: a refused connection, a timeout or a dead engine is checked against the spawned process; the
  error (GeneratorUnavailableError) carries the server's exit code and log tail. With
  `on_server_death=restart` it restarts the server (at most `max_restarts` times). The new server serves the
  checkpoint it started from (weight version 0): before any sync the call is retried at once; after one,
  `weight_version` drops to 0 and GeneratorRestartedError tells the caller to push its weights again (the
  trainer's refit at the step boundary does, on every rank, then retries). The generator never pulls
  weights itself: the weight export is collective over every trainer rank, so only the loop can run it.
  With `stop` the error reaches the trainer, which ends the run; checkpoints already written stay intact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from nemo_spatial.generation.broadcast import GroupSpec
from nemo_spatial.generation.config import GenerationConfig, SamplingConfig, check_nccl_available
from nemo_spatial.generation.process import ServerProcess
from nemo_spatial.generation.transport import BroadcastTransport, ShmTransport, WeightTransport
from nemo_spatial.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationRequestError,
    GeneratorHealth,
    GeneratorRestartedError,
    GeneratorUnavailableError,
    Rollout,
    SyncStats,
    WeightSyncError,
    require_version,
)
from nemo_spatial.generation.wire import decode_rollout, encode_request, encode_sampling
from nemo_spatial.net import free_port

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0


class HttpControl:
    """The server's weight-sync routes as a `WeightSyncControl`, and the other calls, with clear errors."""

    def __init__(self, url: str, request_timeout_s: float, describe_failure: Callable[[str], Exception]) -> None:
        self.url = url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.describe_failure = describe_failure
        self.session = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        try:
            response = self.session.request(
                method, f"{self.url}{path}", json=body, timeout=(CONNECT_TIMEOUT_S, timeout or self.request_timeout_s)
            )
        except requests.Timeout:
            raise self.describe_failure(
                f"{path} got no answer within {timeout or self.request_timeout_s:.0f} s"
            ) from None
        except requests.ConnectionError as error:
            raise self.describe_failure(f"{path} could not reach {self.url}: {error}") from None
        if response.status_code == 200:
            return response.json()
        message = _error_text(response)
        if response.status_code in (400, 404, 409, 422):
            raise GenerationRequestError(f"{path} refused the request ({response.status_code}): {message}")
        if response.status_code == 503 and "engine" in message:
            raise self.describe_failure(f"{path}: {message}")
        raise GenerationError(f"{path} failed ({response.status_code}): {message}")

    def init_transfer(self, init_info: dict[str, Any]) -> None:
        self.call("POST", "/nemo/v1/weights/init", {"init_info": init_info})

    def start_update(self, version: int) -> None:
        self.call("POST", "/nemo/v1/weights/start", {"version": version})

    def update(self, update_info: dict[str, Any]) -> None:
        self.call("POST", "/nemo/v1/weights/update", {"update_info": update_info})

    def finish_update(self, version: int) -> None:
        self.call("POST", "/nemo/v1/weights/finish", {"version": version})


def _error_text(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:2000]
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(data)


class ServerGenerator:
    """Generator over HTTP; see the module docstring for versioning and failure behaviour."""

    def __init__(
        self,
        cfg: GenerationConfig,
        url: str | None = None,
        process: ServerProcess | None = None,
    ) -> None:
        if (url is None) == (process is None):
            raise ValueError("give exactly one of url (a running server) or process (one this trainer spawns)")
        self.cfg = cfg
        self.process = process
        self._version = 0
        self._restarts = 0
        self._transport: WeightTransport | None = None
        self._asleep = False
        self.control = HttpControl(url or process.url, cfg.request_timeout_s, self._unavailable)  # type: ignore[union-attr]

    @classmethod
    def launch(cls, cfg: GenerationConfig, model_dir: str, log_dir: str | Path, **kwargs: Any) -> ServerGenerator:
        """Spawn `python -m nemo_spatial.generation.serve` for `model_dir` and wait until it answers."""
        process = ServerProcess(cfg, model_dir, Path(log_dir) / "generation_server.log", **kwargs)
        process.start()
        try:
            process.wait_ready()
        except BaseException:
            process.stop()
            raise
        return cls(cfg, process=process)

    @property
    def weight_version(self) -> int:
        return self._version

    @property
    def url(self) -> str:
        return self.control.url

    def generate(self, requests_: list[GenerationRequest], params: SamplingConfig) -> list[Rollout]:
        if not requests_:
            return []
        body = {"requests": [encode_request(r) for r in requests_], "sampling": encode_sampling(params)}
        data = self._with_restart(lambda: self.control.call("POST", "/nemo/v1/generate", body))
        rollouts = [decode_rollout(item) for item in data["rollouts"]]
        expected = [(r.prompt_id, i) for r in requests_ for i in range(params.n)]
        if [(r.prompt_id, r.sample_index) for r in rollouts] != expected:
            raise GenerationError("the server returned rollouts out of order or incomplete; client and server differ")
        if data.get("num_errors"):
            failed = [r for r in rollouts if r.error is not None and r.sample_index == 0]
            logger.warning("%d of %d prompts could not run: %s", len(failed), len(requests_), failed[0].error)
        require_version(rollouts, self._version)
        return rollouts

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        if version < 0:
            raise ValueError(f"weight version {version} must be >= 0")
        try:
            stats: SyncStats | None = self._get_transport().sync(named_tensors, version)
        except WeightSyncError as error:
            if not (isinstance(error.__cause__, GeneratorUnavailableError) and self._can_restart()):
                raise
            self._restart(error.__cause__)
            raise GeneratorRestartedError(
                f"the generation server died during the sync of weight version {version} and was restarted "
                "from its checkpoint; push the weights again"
            ) from error
        assert stats is not None
        self._version = version
        return stats

    def health(self) -> GeneratorHealth:
        if self.process is not None and not self.process.alive():
            return GeneratorHealth(False, None, f"server process exited with code {self.process.exit_code()}")
        try:
            data = self.control.call("GET", "/nemo/v1/health", timeout=self.cfg.health_timeout_s)
        except GenerationError as error:
            return GeneratorHealth(False, None, str(error).split("\n", 1)[0])
        detail = "" if data["weights_consistent"] else "the last weight sync did not finish"
        return GeneratorHealth(
            data["weights_consistent"], data["weight_version"], detail, data["model"], data["max_model_len"]
        )

    def confirm_version(self, version: int) -> None:
        """Adopt `version` after a sync another transport drove (the router's fan-out), once the server says so."""
        data = self.control.call("GET", "/nemo/v1/health", timeout=self.cfg.health_timeout_s)
        if data["weight_version"] != version or not data["weights_consistent"]:
            raise WeightSyncError(
                f"the server at {self.url} reports weight version {data['weight_version']} "
                f"(consistent: {data['weights_consistent']}) after the sync of version {version}"
            )
        self._version = version

    def prepare_for_generation(self) -> dict[str, float]:
        """placement=colocated: wake the sleeping server (weights, KV cache) before the refit; apart: nothing."""
        if not self._asleep:
            return {}
        data = self.control.call("POST", "/nemo/v1/wake_up", {})
        self._asleep = bool(data["sleeping"])
        return {"generation/wake_s": float(data["seconds"])}

    def release_memory(self) -> dict[str, float]:
        """placement=colocated: the generation phase is over, put the server to sleep (level 1: weights offloaded
        to host memory, KV cache discarded) so that the trainer's phase gets the GPU memory; apart: nothing."""
        if self.cfg.placement != "colocated":
            return {}
        data = self.control.call("POST", "/nemo/v1/sleep", {"level": 1})
        self._asleep = True
        return {"generation/sleep_s": float(data["seconds"])}

    def restart(self, cause: GeneratorUnavailableError) -> None:
        """Stop the spawned server and start a fresh one (weight version 0); the router calls this per server."""
        self._restart(cause)

    def weight_digest(self) -> str:
        """A hash of the served weights (equal digests: equal weights)."""
        data = self.control.call("POST", "/nemo/v1/weights/digest", {})
        return "-".join(data["digests"])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self.process is not None:
            self.process.stop()

    # -- internals --

    def _get_transport(self) -> WeightTransport:
        if self._transport is None:
            if self.cfg.transport == "shm":
                self._transport = ShmTransport(self.control, self.cfg.bucket_bytes, self.cfg.dtype, self.cfg.shm_dir)
            else:
                check_nccl_available()
                self._transport = BroadcastTransport(
                    self.control, self._group_spec("nccl"), self.cfg.bucket_bytes, self.cfg.dtype
                )
        return self._transport

    def _group_spec(self, backend: str) -> GroupSpec:
        world = int(self.control.call("GET", "/nemo/v1/health", timeout=self.cfg.health_timeout_s)["world_size"])
        address = self.cfg.nccl_master_address or "127.0.0.1"
        port = self.cfg.nccl_master_port or free_port(address)
        return GroupSpec(backend, address, port, world + 1, 1, self.cfg.request_timeout_s)

    def use_broadcast(self, backend: str, master_address: str = "127.0.0.1", master_port: int = 0) -> None:
        """Switch this generator's sync to a broadcast group (nccl, or gloo for CPU tests)."""
        if self._transport is not None:
            self._transport.close()
        world = int(self.control.call("GET", "/nemo/v1/health", timeout=self.cfg.health_timeout_s)["world_size"])
        spec = GroupSpec(backend, master_address, master_port or free_port(master_address), world + 1)
        self._transport = BroadcastTransport(self.control, spec, self.cfg.bucket_bytes, self.cfg.dtype)

    def _unavailable(self, message: str) -> GeneratorUnavailableError:
        if self.process is None:
            return GeneratorUnavailableError(f"generation server: {message}")
        state = "is still running" if self.process.alive() else f"exited with code {self.process.exit_code()}"
        return GeneratorUnavailableError(
            f"generation server (pid {self.process.pid}) {state}: {message}", self.process.log_tail()
        )

    def _can_restart(self) -> bool:
        return (
            self.cfg.on_server_death == "restart"
            and self.process is not None
            and self._restarts < self.cfg.max_restarts
        )

    def _with_restart(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except GeneratorUnavailableError as error:
            if not self._can_restart():
                raise
            had = self._version
            self._restart(error)
            if had > 0:
                raise GeneratorRestartedError(
                    f"the generation server died and was restarted from its checkpoint (version 0); push weight "
                    f"version {had} again before generating (the trainer's refit does)"
                ) from error
            return call()

    def _restart(self, cause: GeneratorUnavailableError) -> None:
        """A fresh server from the model checkpoint; this generator's weight version drops to 0 with it."""
        assert self.process is not None
        self._restarts += 1
        logger.error(
            "generation server died (%s); restart %d of %d",
            str(cause).split("\n", 1)[0],
            self._restarts,
            self.cfg.max_restarts,
        )
        self.process.stop()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.process.start()
        self.process.wait_ready()
        self.control.url = self.process.url
        self._version = 0
        self._asleep = False
