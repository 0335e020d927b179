"""The weight-sync protocol on the trainer side, against consumers that really read the bytes.

The shared-memory consumer loads each bucket file the way the vLLM worker does (`read_bucket`); the
broadcast consumer is a second process in a real stateless gloo group, receiving exactly as the worker's
"nemo" engine does. The engine-side loading into vLLM is covered by tests/e2e/generation.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from nemo_spatial.generation.buckets import read_bucket, unpack_bucket
from nemo_spatial.generation.transport import ShmTransport
from nemo_spatial.generation.types import WeightSyncError
from nemo_spatial.net import free_port


def _model_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {f"model.layers.{i}.mlp.weight": torch.randn(64, 32, generator=generator) for i in range(6)}
    weights["model.embed_tokens.weight"] = torch.randn(100, 32, generator=generator)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]  # tied
    return weights


class ShmConsumer:
    """Loads every bucket like the worker does and records what was live in shared memory meanwhile."""

    def __init__(self, session_root: Path, fail_at: int | None = None) -> None:
        self.session_root = session_root
        self.fail_at = fail_at
        self.received: dict[str, torch.Tensor] = {}
        self.calls: list[str] = []
        self.max_live_files = 0

    def init_transfer(self, init_info: dict[str, Any]) -> None:
        self.calls.append("init")

    def start_update(self, version: int) -> None:
        self.calls.append(f"start {version}")

    def update(self, update_info: dict[str, Any]) -> None:
        assert update_info["kind"] == "shm"
        live = list(self.session_root.glob("nemo-weights-*/*.safetensors"))
        self.max_live_files = max(self.max_live_files, len(live))
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            raise RuntimeError("worker ran out of memory")
        self.calls.append("update")
        for name, tensor in read_bucket(update_info["path"]):
            self.received[name] = tensor.clone()

    def finish_update(self, version: int) -> None:
        self.calls.append(f"finish {version}")


@pytest.mark.parametrize("pipeline", [True, False])
def test_shm_sync_delivers_every_tensor_exactly_with_bounded_staging(tmp_path, pipeline) -> None:
    weights = _model_weights()
    consumer = ShmConsumer(tmp_path)
    bucket_bytes = 20_000  # two or three tensors per bucket
    transport = ShmTransport(consumer, bucket_bytes, "bfloat16", str(tmp_path), pipeline=pipeline)
    stats = transport.sync(iter(weights.items()), version=4)
    assert consumer.calls[0] == "start 4" and consumer.calls[-1] == "finish 4"
    assert stats.num_tensors == len(weights) == len(consumer.received) and stats.num_buckets == len(consumer.calls) - 2
    for name, tensor in weights.items():
        assert torch.equal(consumer.received[name], tensor.to(torch.bfloat16)), name
    assert consumer.max_live_files <= (2 if pipeline else 1)
    assert not list(tmp_path.iterdir()), "the session folder must be removed"


def test_shm_sync_failure_is_reported_and_cleaned_up(tmp_path) -> None:
    consumer = ShmConsumer(tmp_path, fail_at=1)
    transport = ShmTransport(consumer, 20_000, "float32", str(tmp_path))
    with pytest.raises(WeightSyncError, match="weight sync to version 2 failed: worker ran out of memory"):
        transport.sync(iter(_model_weights().items()), version=2)
    assert "finish 2" not in consumer.calls
    assert not list(tmp_path.iterdir())


def test_folders_of_dead_trainers_are_removed(tmp_path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"nemo-weights-{dead.stdout.strip()}-v3-abcd1234"
    mine = tmp_path / f"nemo-weights-{os.getpid()}-v4-abcd1234"
    for folder in (orphan, mine):
        folder.mkdir()
        (folder / "00000.safetensors").write_bytes(b"x")
    ShmTransport(ShmConsumer(tmp_path), 1000, "float32", str(tmp_path))
    assert not orphan.exists() and mine.exists()


def test_shm_dir_must_exist(tmp_path) -> None:
    with pytest.raises(WeightSyncError, match="is not a directory"):
        ShmTransport(ShmConsumer(tmp_path), 1000, "float32", str(tmp_path / "missing"))


def _receiver(spec_args: dict[str, Any], metadata: Any, results: Any, done: Any) -> None:
    """A worker stand-in process: joins the group as rank 1, receives each announced bucket, returns them."""
    from nemo_spatial.generation.broadcast import BroadcastGroup, GroupSpec

    group = BroadcastGroup(GroupSpec(**spec_args), rank=1)
    received: dict[str, torch.Tensor] = {}
    while (meta := metadata.get(timeout=300)) is not None:
        flat = torch.empty(meta.pop("nbytes"), dtype=torch.uint8)
        group.broadcast(flat)
        received.update(unpack_bucket(flat, meta["names"], meta["dtype_names"], meta["shapes"]))
        results.put("ack")
    results.put({name: t.clone() for name, t in received.items()})
    # Tensors cross the queue as shared-memory handles served by this process: stay until they are taken.
    done.wait(timeout=300)
    group.close()


class QueueControl:
    """Forwards the update metadata to the receiver process, as the server forwards it to its workers."""

    def __init__(self, metadata: Any, results: Any) -> None:
        self.metadata, self.results = metadata, results

    def init_transfer(self, init_info: dict[str, Any]) -> None:
        assert init_info["backend"] == "gloo" and init_info["rank_offset"] == 1

    def start_update(self, version: int) -> None:
        pass

    def update(self, update_info: dict[str, Any]) -> None:
        from nemo_spatial.generation.buckets import packed_size

        self.metadata.put({**update_info, "nbytes": packed_size(update_info)})
        assert self.results.get(timeout=300) == "ack"

    def finish_update(self, version: int) -> None:
        self.metadata.put(None)


@pytest.mark.slow  # spawns a process that imports vLLM (~15-45 s on 2 busy cores)
def test_broadcast_transport_over_a_stateless_gloo_group() -> None:
    pytest.importorskip("vllm")
    from nemo_spatial.generation.broadcast import GroupSpec
    from nemo_spatial.generation.transport import BroadcastTransport

    spec = GroupSpec("gloo", "127.0.0.1", free_port(), world_size=2, timeout_s=300)
    context = mp.get_context("spawn")
    metadata, results, done = context.Queue(), context.Queue(), context.Event()
    receiver = context.Process(target=_receiver, args=(vars(spec), metadata, results, done), daemon=True)
    receiver.start()
    try:
        transport = BroadcastTransport(QueueControl(metadata, results), spec, 20_000, "float32")
        weights = _model_weights(seed=1)
        stats = transport.sync(iter(weights.items()), version=1)
        received = results.get(timeout=300)
        transport.close()
    finally:
        done.set()
        receiver.join(timeout=300)
        if receiver.is_alive():
            receiver.kill()
    assert stats.num_tensors == len(weights) and stats.num_buckets > 2
    assert set(received) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(received[name], tensor), name
    assert receiver.exitcode == 0, f"receiver exited with {receiver.exitcode} (pid {os.getpid()})"
