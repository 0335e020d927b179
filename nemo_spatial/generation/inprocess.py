"""`InProcessGenerator`: a vLLM engine owned by the trainer's process, for single-node runs without a server.

It is `vllm.LLM` with the same worker extension, weight-transfer backend, prompt checks, sampling
parameters and output conversion as the server (`engine_io.py`), so for the same requests and seed it
returns the same rollouts. vLLM's engine core and worker still run in child processes (vLLM's default
`VLLM_ENABLE_V1_MULTIPROCESSING=1`): the stack notes found that running them inside the trainer's process
pins it to one thread, sets a NUMA policy, reseeds the global RNG and joins the default process group.
The weights therefore still travel through shared memory (`ShmTransport`), without HTTP. Bad prompts
become error rollouts here too: requests are added one by one, so one bad prompt cannot fail the batch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nemo_spatial.generation.config import GenerationConfig, SamplingConfig
from nemo_spatial.generation.engine_io import (
    check_request,
    error_rollouts,
    parse_version,
    request_seed,
    rollouts_from_output,
    to_engine_prompt,
    to_sampling_params,
    vision_token_ids,
)
from nemo_spatial.generation.transport import ShmTransport
from nemo_spatial.generation.types import GenerationRequest, GeneratorHealth, Rollout, SyncStats, require_version

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
CPU_KV_CACHE_GB = 2.0


class InProcessGenerator:
    """Generator over a `vllm.LLM` in this process; `close()` shuts its engine down."""

    def __init__(self, cfg: GenerationConfig, model_dir: str, seed: int = 0) -> None:
        import torch
        from vllm import LLM

        import nemo_spatial.generation.worker_extension  # noqa: F401 - registers the "nemo" backend here too
        from nemo_spatial.generation.serve import WORKER_EXTENSION

        self.cfg = cfg
        self.model_dir = model_dir
        kv_cache_gb = cfg.kv_cache_gb or (0.0 if torch.cuda.is_available() else CPU_KV_CACHE_GB)
        kwargs: dict[str, Any] = {"kv_cache_memory_bytes": int(kv_cache_gb * 1024**3)} if kv_cache_gb else {}
        self.llm = LLM(
            model=model_dir,
            dtype=cfg.dtype,  # type: ignore[arg-type]
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            logprobs_mode=cfg.logprobs_mode,
            worker_extension_cls=WORKER_EXTENSION,
            weight_transfer_config={"backend": "nemo"},
            seed=seed,
            **kwargs,
        )
        self.engine = self.llm.llm_engine
        self.vision_ids = vision_token_ids(self.llm.get_tokenizer())
        self._version = 0
        self.engine.set_weight_version("0")
        self._transport = ShmTransport(self, cfg.bucket_bytes, cfg.dtype, cfg.shm_dir, pipeline=False)

    @property
    def weight_version(self) -> int:
        return self._version

    def generate(self, requests: list[GenerationRequest], params: SamplingConfig) -> list[Rollout]:
        from vllm.exceptions import VLLMClientError

        batch_id = uuid.uuid4().hex[:12]
        groups: dict[int, list[Rollout]] = {}
        pending: dict[str, tuple[int, str]] = {}
        for index, request in enumerate(requests):
            problem = check_request(request, self.vision_ids)
            if problem is None:
                sampling = to_sampling_params(
                    params, self.vision_ids, request_seed(params.seed, request.prompt_id, index)
                )
                request_id = f"nemo-{batch_id}-{index}"
                try:
                    self.engine.add_request(request_id, to_engine_prompt(request), sampling)  # type: ignore[arg-type]
                    pending[request_id] = (index, request.prompt_id)
                    continue
                except (VLLMClientError, ValueError, TypeError) as error:
                    problem = f"request {request.prompt_id!r}: {error}"
            groups[index] = error_rollouts(request.prompt_id, params.n, problem, self._version)
        while self.engine.has_unfinished_requests():
            for output in self.engine.step():
                if output.finished and output.request_id in pending:
                    index, prompt_id = pending.pop(output.request_id)
                    groups[index] = rollouts_from_output(prompt_id, output, self._version)  # type: ignore[arg-type]
        for request_id, (index, prompt_id) in pending.items():
            groups[index] = error_rollouts(prompt_id, params.n, f"request {request_id}: no output", self._version)
        rollouts = [rollout for index in range(len(requests)) for rollout in groups[index]]
        failed = sum(1 for index in groups if groups[index] and groups[index][0].error)
        if failed:
            logger.warning("%d of %d prompts could not run", failed, len(requests))
        require_version(rollouts, self._version)
        return rollouts

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        if version < 0:
            raise ValueError(f"weight version {version} must be >= 0")
        stats = self._transport.sync(named_tensors, version)
        self._version = parse_version(self.engine.get_weight_version())
        return stats

    def health(self) -> GeneratorHealth:
        try:
            self.engine.engine_core.get_weight_version()
        except Exception as error:  # noqa: BLE001 - any failure means the engine is gone
            return GeneratorHealth(False, None, f"engine is dead: {error!r}")
        return GeneratorHealth(True, self._version, "", self.model_dir, self.cfg.max_model_len)

    def prepare_for_generation(self) -> dict[str, float]:
        return {}  # placement=colocated is refused for the in-process engine (config.py)

    def release_memory(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.engine_core.shutdown()
            self.engine = None  # type: ignore[assignment]

    # -- WeightSyncControl, for ShmTransport --

    def init_transfer(self, init_info: dict[str, Any]) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_update(self, version: int) -> None:
        self.llm.start_weight_update()

    def update(self, update_info: dict[str, Any]) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_update(self, version: int) -> None:
        self.llm.finish_weight_update(str(version))
        # Cached prefixes and image encodings were computed with the old weights.
        self.engine.reset_prefix_cache()
        self.engine.reset_mm_cache()
        self.engine.reset_encoder_cache()
