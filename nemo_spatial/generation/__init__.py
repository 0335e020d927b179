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
    """The generator the config asks for: a server at `cfg.url`, a spawned server, or an in-process engine."""
    if cfg.mode == "inprocess":
        from nemo_spatial.generation.inprocess import InProcessGenerator

        return InProcessGenerator(cfg, model_dir)
    from nemo_spatial.generation.client import ServerGenerator

    if cfg.url:
        return ServerGenerator(cfg, url=cfg.url)
    return ServerGenerator.launch(cfg, model_dir, cfg.log_dir or Path(run_dir) / "generation")
