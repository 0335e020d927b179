"""The generation configuration: where rollouts come from and how weights reach them.

`GenerationConfig` is the `generation:` section of the root config. It is validated at construction, so a
misspelled mode or an impossible combination (NCCL transport with no GPU visible, an in-process engine
with a URL, top_p outside (0, 1]) fails before any engine starts, with the key and the fix in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlparse

from nemo_spatial.errors import ConfigError

MODES = ("server", "inprocess")
TRANSPORTS = ("shm", "nccl")
DTYPES = ("bfloat16", "float16", "float32", "auto")
ON_SERVER_DEATH = ("stop", "restart")
PLACEMENTS = ("apart", "colocated")
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class SamplingConfig:
    """Sampling for one batch of prompts; the defaults are SpatialThinker's rollout settings."""

    KEY: ClassVar[str] = "generation.sampling"  # where it sits in the config: messages name the full key
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 2048
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    # Return the log-probs of the prompt tokens too (used to check the weights, not during training).
    prompt_logprobs: bool = False
    # A random policy can sample <|image_pad|> and friends, which break the trainer's forward.
    forbid_vision_tokens: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"{self.KEY}.n={self.n} must be >= 1 (samples per prompt; GRPO uses the group of n)")
        if self.temperature < 0:
            raise ConfigError(f"{self.KEY}.temperature={self.temperature} must be >= 0 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{self.KEY}.top_p={self.top_p} must be in (0, 1]; 1.0 disables nucleus sampling")
        if self.top_k == 0 or self.top_k < -1:
            raise ConfigError(f"{self.KEY}.top_k={self.top_k} must be -1 (off) or >= 1")
        if self.max_tokens < 1:
            raise ConfigError(f"{self.KEY}.max_tokens={self.max_tokens} must be >= 1")


@dataclass
class ValSamplingConfig(SamplingConfig):
    """Sampling for validation: upstream's temperature 0.5, one sample per prompt."""

    KEY: ClassVar[str] = "generation.val_sampling"
    n: int = 1
    temperature: float = 0.5


@dataclass
class GenerationConfig:
    """The rollout engine (vLLM) and the weight sync from the trainer into it."""

    mode: str = "server"  # server: a vLLM server process (spawned, or at `url`); inprocess: a vLLM engine here
    url: str = ""  # an already running server; empty: spawn one on 127.0.0.1
    urls: list[str] = field(default_factory=list)  # several running servers (e.g. started by the SLURM launcher)
    num_servers: int = 1  # servers to spawn on this host when no url/urls are given
    placement: str = "apart"  # apart: generation GPUs of their own; colocated: shared with the trainer (vLLM sleeps)
    host: str = "127.0.0.1"  # where a spawned server binds
    port: int = 0  # 0: a free port
    transport: str = "shm"  # shm: /dev/shm files on one host (CPU and GPU); nccl: broadcast across hosts
    shm_dir: str = "/dev/shm"
    bucket_mb: int = 512  # bound on the weights staged at once, on each side
    nccl_master_address: str = ""  # the trainer host's address the vLLM workers can reach (nccl transport)
    nccl_master_port: int = 0  # 0: a free port
    dtype: str = "bfloat16"
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1
    enforce_eager: bool = False  # True: no CUDA graphs / torch.compile (starts faster, decodes slower)
    logprobs_mode: str = "processed_logprobs"  # log-probs of the distribution actually sampled from
    max_num_seqs: int = 64
    kv_cache_gb: float = 0.0  # KV cache size; 0: from gpu_memory_utilization on GPUs, 2 GiB on CPU
    startup_timeout_s: float = 600.0
    request_timeout_s: float = 1800.0
    health_timeout_s: float = 10.0
    health_interval_s: float = 15.0  # several servers: probe each busy one this often; 3 failed probes = hung
    on_server_death: str = "stop"  # stop: raise with the server's log tail; restart: restart and re-sync
    max_restarts: int = 2
    log_dir: str = ""  # where a spawned server writes its log; empty: the run directory's generation/
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    val_sampling: ValSamplingConfig = field(default_factory=ValSamplingConfig)

    def __post_init__(self) -> None:
        _check_choice("generation.mode", self.mode, MODES)
        _check_choice("generation.transport", self.transport, TRANSPORTS)
        _check_choice("generation.dtype", self.dtype, DTYPES)
        _check_choice("generation.on_server_death", self.on_server_death, ON_SERVER_DEATH)
        _check_choice("generation.logprobs_mode", self.logprobs_mode, LOGPROBS_MODES)
        _check_choice("generation.placement", self.placement, PLACEMENTS)
        if self.num_servers < 1:
            raise ConfigError(f"generation.num_servers={self.num_servers} must be >= 1")
        if self.url and self.urls:
            raise ConfigError(
                f"generation.url={self.url!r} and generation.urls={self.urls!r} are both set; "
                "use generation.urls for one or several running servers and clear generation.url"
            )
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"generation.urls entry {url!r} must start with http:// or https://")
        if self.mode == "inprocess" and self.url:
            raise ConfigError(
                f"generation.url={self.url!r} is set but generation.mode=inprocess builds its own engine; "
                "use generation.mode=server to talk to a running server, or clear generation.url"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"generation.url={self.url!r} must start with http:// or https://")
        if self.bucket_mb < 1:
            raise ConfigError(f"generation.bucket_mb={self.bucket_mb} must be >= 1 (MiB staged per weight bucket)")
        if not 0 <= self.port < 65536 or not 0 <= self.nccl_master_port < 65536:
            raise ConfigError("generation.port and generation.nccl_master_port must be in [0, 65535] (0: a free port)")
        if self.max_model_len < 16:
            raise ConfigError(f"generation.max_model_len={self.max_model_len} must be >= 16")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"generation.gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        if self.kv_cache_gb < 0:
            raise ConfigError(f"generation.kv_cache_gb={self.kv_cache_gb} must be >= 0 (0: the engine's default)")
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"generation.tensor_parallel_size={self.tensor_parallel_size} must be >= 1")
        if self.max_restarts < 0:
            raise ConfigError(f"generation.max_restarts={self.max_restarts} must be >= 0")
        for name in ("startup_timeout_s", "request_timeout_s", "health_timeout_s", "health_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"generation.{name}={getattr(self, name)} must be > 0 seconds")
        if self.on_server_death == "restart" and (self.url or self.urls):
            key = "generation.url" if self.url else "generation.urls"
            raise ConfigError(
                f"generation.on_server_death=restart needs a server this process spawned; with {key} set, "
                f"the servers belong to someone else: use generation.on_server_death=stop, or clear {key}"
            )
        self._check_placement()
        remote = [h for h in (urlparse(u).hostname or "127.0.0.1" for u in [self.url, *self.urls] if u)]
        remote = [h for h in remote if h not in LOOPBACK_HOSTS]
        server_host = remote[0] if remote else "127.0.0.1"
        if self.transport == "nccl" and server_host not in LOOPBACK_HOSTS and not self.nccl_master_address:
            # The default rendezvous address, 127.0.0.1, would send the server's workers to their own host and
            # the sync would wait out its timeout (30 min) before failing.
            raise ConfigError(
                f"generation.transport=nccl with the server on {server_host} needs "
                "generation.nccl_master_address: this trainer host's address that the server's workers can reach"
            )
        if self.transport == "nccl" and self.mode == "inprocess":
            raise ConfigError(
                "generation.transport=nccl is for a server on other hosts; an in-process engine shares this host, "
                "so use generation.transport=shm"
            )
        if self.sampling.max_tokens >= self.max_model_len:
            raise ConfigError(
                f"generation.sampling.max_tokens={self.sampling.max_tokens} leaves no room for the prompt within "
                f"generation.max_model_len={self.max_model_len}; raise max_model_len or lower max_tokens"
            )

    def _check_placement(self) -> None:
        if self.placement != "colocated":
            return
        if self.mode != "server" or self.url or self.urls:
            raise ConfigError(
                "generation.placement=colocated shares this host's GPUs with servers this trainer spawns (it puts "
                "them to sleep between phases); it needs generation.mode=server with generation.url and "
                "generation.urls empty. Use generation.placement=apart for servers started elsewhere"
            )

    @property
    def bucket_bytes(self) -> int:
        return self.bucket_mb * 1024 * 1024


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; use one of: {', '.join(choices)}")


def check_nccl_available() -> None:
    """Raise with the fix when the NCCL transport is chosen where no CUDA device is visible."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "generation.transport=nccl needs CUDA GPUs on the trainer and the vLLM workers; none is visible here. "
            "Use generation.transport=shm (one host, CPU or GPU)"
        )
