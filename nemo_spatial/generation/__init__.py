"""Rollout generation: the generator interface, the vLLM server and its client, the weight-sync transports.

The trainer imports only this package's interface (`Generator`, `GenerationRequest`, `Rollout`,
`SamplingConfig`, `require_version`) and `build_generator`; vLLM is imported only by the server, the
worker extension and the in-process engine, when they are used.
"""

from __future__ import annotations

from pathlib import Path

from nemo_spatial.generation.config import GenerationConfig, SamplingConfig
from nemo_spatial.generation.types import (
    GenerationError,
    GenerationRequest,
    GenerationRequestError,
    Generator,
    GeneratorHealth,
    GeneratorRestartedError,
    GeneratorUnavailableError,
    Rollout,
    StaleRolloutError,
    SyncStats,
    WeightSyncError,
    require_version,
)

__all__ = [
    "GenerationConfig",
    "GenerationError",
    "GenerationRequest",
    "GenerationRequestError",
    "Generator",
    "GeneratorHealth",
    "GeneratorRestartedError",
    "GeneratorUnavailableError",
    "Rollout",
    "SamplingConfig",
    "StaleRolloutError",
    "SyncStats",
    "WeightSyncError",
    "build_generator",
    "require_version",
]


def build_generator(cfg: GenerationConfig, model_dir: str, run_dir: str | Path) -> Generator:
    """The generator the config asks for: a server at `cfg.url` (or the one entry of `cfg.urls`), a spawned
    server, an in-process engine, or a router over several servers (`cfg.urls`, `cfg.num_servers` > 1)."""
    if cfg.mode == "inprocess":
        from nemo_spatial.generation.inprocess import InProcessGenerator

        return InProcessGenerator(cfg, model_dir)
    from nemo_spatial.generation.client import ServerGenerator

    log_dir = cfg.log_dir or Path(run_dir) / "generation"
    if len(cfg.urls) > 1 or (not cfg.url and not cfg.urls and cfg.num_servers > 1):
        from nemo_spatial.generation.router import RouterGenerator

        if cfg.urls:
            return RouterGenerator.connect(cfg, cfg.urls)
        return RouterGenerator.launch(cfg, model_dir, log_dir, cfg.num_servers)
    if cfg.url or cfg.urls:
        return ServerGenerator(cfg, url=cfg.url or cfg.urls[0])
    return ServerGenerator.launch(cfg, model_dir, log_dir)
