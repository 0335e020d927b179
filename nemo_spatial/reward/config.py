"""The `reward:` and `reward_service:` config sections: what is scored, where, and how the reward server runs.

    reward:
      preset: spatialthinker  # spatialthinker | r1v | letter_a (nemo_spatial.reward.batch.PRESETS)
      similarity: auto       # label similarity: auto | spacy | trigram (nemo_spatial.reward.similarity)
    reward_service:
      mode: local            # local: score in the trainer's process; remote: ask the server at `url`
      url: http://127.0.0.1:5555
      server: {host: 127.0.0.1, port: 5555, workers: 0, ...}

The preset and the label similarity stay in `reward:`; the server reads them from the same config, so a trainer
and its server that load one YAML compute the same numbers (the client also checks this at connect).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nemo_spatial.errors import ConfigError
from nemo_spatial.reward.batch import PRESETS

SIMILARITY_BACKENDS = ("auto", "spacy", "trigram")
MODES = ("local", "remote")
DEFAULT_PORT = 5555  # NeMo-Aligner's remote reward model default
MODEL_NAME = "reward_model"


@dataclass
class RewardConfig:
    """The reward: preset, label similarity backend, and where it is computed."""

    preset: str = "spatialthinker"
    similarity: str = "auto"
    similarity_model: str = "en_core_web_md"
    upstream_exact: bool = False  # upstream's spatialthinker value exactly: mciou not floored at 0
    sample_time_budget_s: float = 2.0  # CPU seconds one sample may take; past it: reward 0 and an error

    def __post_init__(self) -> None:
        if not self.sample_time_budget_s > 0:
            raise ConfigError(f"reward.sample_time_budget_s={self.sample_time_budget_s} must be > 0")
        if self.preset not in PRESETS:
            raise ConfigError(f"reward.preset={self.preset!r} is not a preset; use one of: {', '.join(PRESETS)}")
        if self.similarity not in SIMILARITY_BACKENDS:
            raise ConfigError(
                f"reward.similarity={self.similarity!r} is not a backend; use one of: {', '.join(SIMILARITY_BACKENDS)}"
            )


@dataclass
class RewardServerConfig:
    """`python -m nemo_spatial.reward.serve`: address, scoring processes, limits, auth."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 0  # scoring processes; 0 = one per core this process may run on
    chunk_size: int = 128  # samples per job handed to a scoring process (large requests are split)
    max_batch_size: int = 16384  # samples per request
    max_request_mb: float = 64.0  # request body, after decompression
    graceful_timeout_s: float = 30.0  # on SIGTERM: how long in-flight requests may take to finish
    allow_unauthenticated: bool = False  # serve a non-loopback host without a bearer token

    def __post_init__(self) -> None:
        _check_port("reward_service.server.port", self.port)
        if self.workers < 0:
            raise ConfigError(f"reward_service.server.workers={self.workers} must be >= 0 (0 = one per core)")
        if self.chunk_size < 1:
            raise ConfigError(f"reward_service.server.chunk_size={self.chunk_size} must be >= 1")
        if self.max_batch_size < 1:
            raise ConfigError(f"reward_service.server.max_batch_size={self.max_batch_size} must be >= 1")
        if not 0 < self.max_request_mb <= 4096:
            raise ConfigError(f"reward_service.server.max_request_mb={self.max_request_mb} must be in (0, 4096]")
        if self.graceful_timeout_s <= 0:
            raise ConfigError(f"reward_service.server.graceful_timeout_s={self.graceful_timeout_s} must be > 0")

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass
class RewardServiceConfig:
    """How the trainer gets rewards: in its own process, or from the remote reward server."""

    mode: str = "local"
    url: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    model_name: str = MODEL_NAME
    timeout_s: float = 60.0  # one request, from sending to the last byte of the answer
    connect_timeout_s: float = 5.0
    retries: int = 5  # further attempts after a failed one (connection lost, 502/503/504, timeout)
    backoff_s: float = 0.5  # wait before the first retry; doubles each time up to backoff_max_s
    backoff_max_s: float = 8.0  # also bounds a 429/503 Retry-After wait
    batch_size: int = 512  # samples per request
    max_in_flight: int = 4  # concurrent requests of one client
    binary_data: bool = True  # v2 binary tensor extension; false sends JSON only
    token_env: str = "NEMO_SPATIAL_REWARD_TOKEN"  # env var holding the bearer token ('' or unset: no auth)
    server: RewardServerConfig = field(default_factory=RewardServerConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"reward_service.mode={self.mode!r} is not a mode; use one of: {', '.join(MODES)}")
        parse_url(self.url)
        if not self.model_name or "/" in self.model_name:
            raise ConfigError(f"reward_service.model_name={self.model_name!r} must be a non-empty name without '/'")
        for name in ("timeout_s", "connect_timeout_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"reward_service.{name}={getattr(self, name)} must be > 0")
        if self.backoff_s < 0:
            raise ConfigError(f"reward_service.backoff_s={self.backoff_s} must be >= 0")
        if not 0 <= self.retries <= 20:
            raise ConfigError(f"reward_service.retries={self.retries} must be in [0, 20]")
        if self.batch_size < 1:
            raise ConfigError(f"reward_service.batch_size={self.batch_size} must be >= 1")
        if self.max_in_flight < 1:
            raise ConfigError(f"reward_service.max_in_flight={self.max_in_flight} must be >= 1")


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of the server URL; ConfigError naming what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"reward_service.url={url!r} is not a URL ({error}); e.g. http://127.0.0.1:5555") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"reward_service.url={url!r} must look like http://HOST:PORT, e.g. http://127.0.0.1:5555")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"reward_service.url={url!r} must not have a path; the v2 routes are fixed (/v2/...)")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port if port is not None else default


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}={port} must be a TCP port in [1, 65535]")
