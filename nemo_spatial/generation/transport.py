"""Trainer side of the weight sync: stream the policy's (HF name, tensor) pairs into the vLLM workers.

What it computes: one versioned update = `start(version)`, one `update(chunk)` per bucket, `finish(version)`
on a `WeightSyncControl` (the server's HTTP routes, or the in-process engine), with the bytes moving by:
- `ShmTransport`: each bucket written once to a safetensors file under /dev/shm, its path sent in the
  update; the next bucket is written while the workers load the current one (one update in flight), so
  at most two bucket files and one bucket being built exist at any time. Files are removed as soon as
  their update returns, and the session folder on any exit.
- `BroadcastTransport`: each bucket packed into one flat buffer and broadcast from rank 0 (the trainer)
  over a stateless NCCL (or, on CPU, gloo) group, concurrently with the update call that tells the
  workers the bucket's names, dtypes and shapes (both sides meet inside the same broadcast).
Peak extra memory is a few buckets (`generation.bucket_mb`), whatever the model size. Only the trainer's
rank that drives the sync calls these; other ranks only take part in the policy's gather.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nemo_spatial.generation.buckets import (
    SCRATCH_BYTES,
    dtype_from_name,
    iter_buckets,
    new_scratch,
    pack_bucket,
    write_bucket,
)
from nemo_spatial.generation.types import SyncStats, WeightSyncError

if TYPE_CHECKING:
    import torch

    from nemo_spatial.generation.broadcast import BroadcastGroup, GroupSpec


class WeightSyncControl(Protocol):
    """The control plane of vLLM's weight-update lifecycle (data moves beside it)."""

    def init_transfer(self, init_info: dict[str, Any]) -> None: ...

    def start_update(self, version: int) -> None: ...

    def update(self, update_info: dict[str, Any]) -> None: ...

    def finish_update(self, version: int) -> None: ...


class WeightTransport(Protocol):
    def sync(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats: ...

    def close(self) -> None: ...


class ShmTransport:
    """Buckets through safetensors files in shared memory (trainer and vLLM on one host)."""

    def __init__(
        self,
        control: WeightSyncControl,
        bucket_bytes: int,
        dtype: str,
        shm_dir: str = "/dev/shm",
        pipeline: bool = True,
    ) -> None:
        if not os.path.isdir(shm_dir):
            raise WeightSyncError(f"generation.shm_dir={shm_dir!r} is not a directory; use /dev/shm (a tmpfs)")
        self.control = control
        self.bucket_bytes = bucket_bytes
        self.dtype = dtype_from_name(dtype)
        self.shm_dir = shm_dir
        # Pipelining calls `control.update` from a second thread; a control that is not thread-safe says no.
        self.pipeline = pipeline
        self._scratch: torch.Tensor | None = None  # reused by every sync: fresh memory costs page faults
        remove_orphaned_sessions(shm_dir)

    def sync(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        session = Path(self.shm_dir) / f"{SESSION_PREFIX}{os.getpid()}-v{version}-{uuid.uuid4().hex[:8]}"
        session.mkdir(parents=True)
        start = time.perf_counter()
        num_tensors = num_bytes = num_buckets = 0
        if self._scratch is None:
            self._scratch = new_scratch(min(SCRATCH_BYTES, self.bucket_bytes))
        try:
            self.control.start_update(version)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-sync") as pool:
                in_flight: tuple[Future[None], Path] | None = None
                for index, bucket in enumerate(iter_buckets(named_tensors, self.bucket_bytes, self.dtype)):
                    path = session / f"{index:05d}.safetensors"
                    num_bytes += write_bucket(bucket, path, self._scratch)
                    num_tensors += len(bucket.tensors)
                    num_buckets += 1
                    del bucket
                    if in_flight is not None:
                        _finish(in_flight)
                        in_flight = None
                    update = {"kind": "shm", "path": str(path)}
                    if self.pipeline:
                        in_flight = (pool.submit(self.control.update, update), path)
                    else:
                        try:
                            self.control.update(update)
                        finally:
                            path.unlink(missing_ok=True)
                if in_flight is not None:
                    _finish(in_flight)
            self.control.finish_update(version)
        except WeightSyncError:
            raise
        except Exception as error:
            raise WeightSyncError(f"weight sync to version {version} failed: {error}") from error
        finally:
            shutil.rmtree(session, ignore_errors=True)
        return SyncStats(version, num_tensors, num_bytes, num_buckets, time.perf_counter() - start)

    def close(self) -> None:
        pass


SESSION_PREFIX = "nemo-weights-"


def remove_orphaned_sessions(shm_dir: str) -> list[Path]:
    """Delete bucket folders left in shared memory by trainers that died mid-sync (their pid is gone)."""
    removed = []
    for folder in Path(shm_dir).glob(f"{SESSION_PREFIX}*"):
        pid_text = folder.name.removeprefix(SESSION_PREFIX).split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(in_flight: tuple[Future[None], Path]) -> None:
    future, path = in_flight
    try:
        future.result()
    finally:
        path.unlink(missing_ok=True)


class BroadcastTransport:
    """Buckets broadcast from the trainer (rank 0) to every vLLM worker over a stateless group."""

    def __init__(self, control: WeightSyncControl, spec: GroupSpec, bucket_bytes: int, dtype: str) -> None:
        from nemo_spatial.generation.broadcast import BroadcastGroup

        self.control = control
        self.spec = spec
        self.bucket_bytes = bucket_bytes
        self.dtype = dtype_from_name(dtype)
        init_info = {
            "backend": spec.backend,
            "master_address": spec.master_address,
            "master_port": spec.master_port,
            "world_size": spec.world_size,
            "rank_offset": spec.rank_offset,
            "timeout_s": spec.timeout_s,
        }
        # The workers block in the rendezvous until the trainer joins as rank 0: both must run at once.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-sync-init") as pool:
            joined = pool.submit(self.control.init_transfer, init_info)
            self.group: BroadcastGroup = BroadcastGroup(spec, rank=0)
            joined.result()

    def sync(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> SyncStats:
        start = time.perf_counter()
        num_tensors = num_bytes = num_buckets = 0
        try:
            self.control.start_update(version)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-sync") as pool:
                for bucket in iter_buckets(named_tensors, self.bucket_bytes, self.dtype):
                    flat, meta = pack_bucket(bucket, self.group.device)
                    del bucket
                    received = pool.submit(self.control.update, {"kind": "broadcast", **meta})
                    self.group.broadcast(flat)
                    received.result()
                    num_tensors += len(meta["names"])
                    num_bytes += flat.numel()
                    num_buckets += 1
            self.control.finish_update(version)
        except Exception as error:
            raise WeightSyncError(
                f"weight sync to version {version} over {self.spec.backend} failed: {error}; the broadcast group "
                "is unusable now, restart the generation server"
            ) from error
        return SyncStats(version, num_tensors, num_bytes, num_buckets, time.perf_counter() - start)

    def close(self) -> None:
        self.group.close()
