"""This project's code inside vLLM's worker processes: the "nemo" weight-transfer engine and its registration.

vLLM (0.32) already has the weight-update lifecycle this project needs: `start_weight_update` (turns on
layerwise reloading), any number of `update_weights(chunk)`, then `finish_weight_update` (processes the
layers, e.g. the CPU build's weight repacking, and sets the weight version that every later output token
is tagged with). Its built-in backends are CUDA-only (CUDA IPC, NCCL). This module adds one backend,
registered under the name "nemo", that receives a chunk in one of two ways:

- kind "shm": the chunk is a safetensors file the trainer wrote to shared memory on this host (see
  `buckets.py`); the worker maps it and loads the tensors. Works on CPU and GPU.
- kind "broadcast": the chunk arrives as one flat buffer broadcast from the trainer over the group set up
  by `init_transfer_engine` (NCCL across hosts, or gloo on CPU; see `broadcast.py`), with its names,
  dtypes and shapes in the update's metadata.

Loading goes through `model.load_weights` inside vLLM's layerwise reload, so HF checkpoint names (either
`model.language_model.*` or `model.layers.*` layouts) are mapped by vLLM's own Qwen2.5-VL loader, and a
layer split across two chunks is processed once all of its weights have arrived.

`NemoWorkerExtension` (passed as `--worker-extension-cls`) is imported by vLLM in every worker before the
model loads; importing it registers the engine there. It also offers a weight digest RPC for tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory
from vllm.logger import init_logger

from nemo_spatial.generation.broadcast import BroadcastGroup, GroupSpec
from nemo_spatial.generation.buckets import packed_size, read_bucket, unpack_bucket

ENGINE_NAME = "nemo"
logger = init_logger(__name__)


@dataclass
class NemoInitInfo(WeightTransferInitInfo):
    """Set up the broadcast group (backend nccl or gloo); backend "none" needs nothing (shm only)."""

    backend: str = "none"
    master_address: str = ""
    master_port: int = 0
    world_size: int = 0
    rank_offset: int = 1
    timeout_s: float = 600.0


@dataclass
class NemoUpdateInfo(WeightTransferUpdateInfo):
    """One chunk: a shm file path, or the metadata of a broadcast buffer."""

    kind: str
    path: str = ""
    names: list[str] = field(default_factory=list)
    dtype_names: list[str] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind == "shm" and not self.path:
            raise ValueError("a shm weight update needs the path of the bucket file")
        if self.kind not in ("shm", "broadcast"):
            raise ValueError(f"weight update kind {self.kind!r} is not 'shm' or 'broadcast'")


class NemoWeightTransferEngine(WeightTransferEngine[NemoInitInfo, NemoUpdateInfo]):
    init_info_cls = NemoInitInfo
    update_info_cls = NemoUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group: BroadcastGroup | None = None

    def init_transfer_engine(self, init_info: NemoInitInfo) -> None:
        if init_info.backend == "none":
            return
        if self.group is not None:
            self.group.close()
        spec = GroupSpec(
            init_info.backend,
            init_info.master_address,
            init_info.master_port,
            init_info.world_size,
            init_info.rank_offset,
            init_info.timeout_s,
        )
        parallel = self.parallel_config
        worker_rank = parallel.data_parallel_index * parallel.world_size + parallel.rank
        self.group = BroadcastGroup(spec, rank=worker_rank + init_info.rank_offset)
        logger.info("nemo weight transfer: joined %s group as rank %d", spec.backend, self.group.rank)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class calls torch.accelerator.synchronize(), which raises on CPU-only hosts.
        self.receive_weights(self.parse_update_info(update_info))
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def receive_weights(self, update_info: NemoUpdateInfo) -> None:
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        if update_info.kind == "shm":
            tensors = read_bucket(update_info.path)
            if self.device.type != "cpu":
                tensors = [(name, t.to(self.device, non_blocking=True)) for name, t in tensors]
        else:
            if self.group is None:
                raise RuntimeError("a broadcast weight update arrived before init_weight_transfer_engine")
            meta: dict[str, Any] = {"dtype_names": update_info.dtype_names, "shapes": update_info.shapes}
            flat = torch.empty(packed_size(meta), dtype=torch.uint8, device=self.group.device)
            self.group.broadcast(flat)
            tensors = unpack_bucket(flat, update_info.names, update_info.dtype_names, update_info.shapes)
        with disable_mtp_completeness_check():
            self.model.load_weights(tensors)  # type: ignore[operator]

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


def register_engine() -> None:
    """Make the "nemo" backend known to vLLM's factory in this process (idempotent)."""
    if ENGINE_NAME not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(ENGINE_NAME, NemoWeightTransferEngine)


register_engine()


class NemoWorkerExtension:
    """Mixed into vLLM's worker class (`--worker-extension-cls`); its methods are callable by collective_rpc."""

    def nemo_weight_digest(self) -> str:
        """A SHA-256 over the model's parameters (names and bytes), to compare weights across syncs."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            digest.update(name.encode())
            digest.update(param.detach().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()
