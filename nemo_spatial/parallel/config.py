"""How the policy is sharded: tensor, pipeline, sequence, context parallel sizes; data parallel is the rest.

These checks need only the config; `layout.resolve_layout` checks the sizes against the world size and the model
at start-up, when both are known.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_spatial.errors import ConfigError

BACKENDS = ("auto", "nccl", "gloo")


@dataclass
class ParallelConfig:
    """Megatron-Core parallel layout. World size = TP x PP x CP x DP; DP is derived, never configured."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    sequence_parallel: bool = False
    context_parallel_size: int = 1
    # "auto": NCCL when CUDA is available, else gloo (CPU: the entry point's nemo_spatial.parallel.cpu_compat.activate).
    backend: str = "auto"
    # How long a collective may wait before the job fails (a hung rank should not hang the job forever).
    timeout_minutes: int = 30

    def __post_init__(self) -> None:
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"parallel.{key}={value!r} must be an integer >= 1")
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ConfigError(
                "parallel.sequence_parallel=true needs tensor parallelism (it splits the sequence across the TP "
                "ranks); set parallel.tensor_model_parallel_size>=2 or parallel.sequence_parallel=false"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"parallel.backend={self.backend!r} is not a backend; use one of: {', '.join(BACKENDS)}")
        if self.timeout_minutes < 1:
            raise ConfigError(f"parallel.timeout_minutes={self.timeout_minutes} must be >= 1")

    @property
    def model_parallel_size(self) -> int:
        """Ranks that hold one copy of the model: TP x PP x CP."""
        return self.tensor_model_parallel_size * self.pipeline_model_parallel_size * self.context_parallel_size
