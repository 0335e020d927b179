"""Bounded buckets of (name, tensor) pairs, and their staging as safetensors files in shared memory.

What it computes:
- `iter_buckets`: groups a stream of full HF-named tensors into buckets whose byte size (after the cast to
  the engine's dtype) is at most `bucket_bytes`; a single tensor larger than the bound travels alone. A
  bucket holds references to the trainer's tensors, not copies, and only one bucket is held at a time, so
  the extra memory is bounded by the bucket size, not the model size.
- `write_bucket` / `read_bucket`: one bucket as one file in the standard safetensors layout (8-byte header
  length, JSON header, raw bytes, no holes). A tensor already in the target dtype, contiguous and on the
  CPU is written straight from its memory; any other (a cast, a GPU tensor, a strided view) goes through a
  small reusable scratch buffer, chunk by chunk. Either way each byte is copied once, into the file, and no
  buffer of the bucket's size is allocated (fresh memory costs page faults, which dominated the first
  measurements here). Reading maps the file privately (`torch.from_file`) and returns zero-copy views;
  within a bucket tensors are ordered by decreasing element size, so every view is aligned. Any
  safetensors reader can open these files.
- `pack_bucket` / `unpack_bucket`: the same bucket as one flat byte buffer (cast on the way in), for a
  broadcast.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from nemo_spatial.fileio import atomic_write

# safetensors dtype names <-> torch dtypes (the ones a policy's weights can have).
_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _ST_DTYPES.items()}
_MAX_HEADER_BYTES = 100 * 1024 * 1024
SCRATCH_BYTES = 64 * 1024 * 1024


@dataclass
class Bucket:
    """Tensors staged together: references to the trainer's tensors and the dtype they are sent in."""

    tensors: list[tuple[str, torch.Tensor]]
    dtype: torch.dtype | None = None  # None: each tensor keeps its dtype

    def target_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        return self.dtype or tensor.dtype

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * _element_size(self.target_dtype(t)) for _, t in self.tensors)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.tensors]

    def ordered(self) -> list[tuple[str, torch.Tensor]]:
        """Largest element size first, so every tensor starts at an offset aligned for its dtype."""
        return sorted(self.tensors, key=lambda item: -_element_size(self.target_dtype(item[1])))


def dtype_from_name(name: str) -> torch.dtype | None:
    """'bfloat16' -> torch.bfloat16; 'auto' -> None (keep each tensor's dtype)."""
    if name == "auto":
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {name!r} is not a torch dtype; use bfloat16, float16, float32 or auto")
    return dtype


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, dtype: torch.dtype | None
) -> Iterator[Bucket]:
    """Consecutive buckets of at most `bucket_bytes` (a larger single tensor makes its own bucket)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes={bucket_bytes} must be >= 1")
    current: list[tuple[str, torch.Tensor]] = []
    current_bytes = 0
    seen: set[str] = set()
    for name, tensor in named_tensors:
        if name in seen:
            raise ValueError(f"weight {name!r} appears twice in the policy's weight stream")
        seen.add(name)
        target = dtype or tensor.dtype
        if target not in _ST_DTYPES:
            raise ValueError(f"weight {name!r} has dtype {target}, which cannot be sent; cast the policy to a float")
        nbytes = tensor.numel() * _element_size(target)
        if current and current_bytes + nbytes > bucket_bytes:
            yield Bucket(current, dtype)
            current, current_bytes = [], 0
        current.append((name, tensor.detach()))
        current_bytes += nbytes
    if current:
        yield Bucket(current, dtype)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def new_scratch(nbytes: int = SCRATCH_BYTES) -> torch.Tensor:
    """A reusable staging buffer for `write_bucket` (keep one per transport)."""
    return torch.empty(nbytes, dtype=torch.uint8)


def write_bucket(bucket: Bucket, path: str | os.PathLike[str], scratch: torch.Tensor | None = None) -> int:
    """Write `bucket` to `path` (via a temporary name, so readers never see half a file); returns bytes."""
    ordered = bucket.ordered()
    header: dict[str, object] = {}
    offset = 0
    for name, tensor in ordered:
        dtype = bucket.target_dtype(tensor)
        nbytes = tensor.numel() * _element_size(dtype)
        header[name] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header to 8 bytes
    with atomic_write(Path(path), "wb") as handle:  # the reader never sees a half-written bucket
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for _, tensor in ordered:
            scratch = _write_tensor(handle, tensor, bucket.target_dtype(tensor), scratch)
    return 8 + len(encoded) + offset


def _write_tensor(handle: IO[bytes], tensor: torch.Tensor, dtype: torch.dtype, scratch: torch.Tensor | None):
    if tensor.numel() == 0:
        return scratch
    if tensor.device.type == "cpu" and tensor.dtype == dtype and tensor.is_contiguous():
        handle.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
        return scratch
    if scratch is None:
        scratch = new_scratch()
    flat = tensor.reshape(-1)  # a view when contiguous; strided tensors are copied once here
    chunk = max(1, scratch.numel() // _element_size(dtype))
    typed = scratch[: chunk * _element_size(dtype)].view(dtype)
    for start in range(0, flat.numel(), chunk):
        piece = flat[start : start + chunk]
        typed[: piece.numel()].copy_(piece)
        handle.write(typed[: piece.numel()].view(torch.uint8).numpy().data)
    return scratch


def read_bucket(path: str | os.PathLike[str]) -> list[tuple[str, torch.Tensor]]:
    """The tensors of a bucket file as views of a private memory map (no copy until they are used)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path} is not a safetensors file (header length {header_len} > file size)")
        header = json.loads(handle.read(header_len))
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    mapped = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    tensors: list[tuple[str, torch.Tensor]] = []
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        dtype = _TORCH_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= size - data_start:
            raise ValueError(f"{path}: tensor {name!r} has offsets {start}..{end} outside the file")
        raw = mapped[data_start + start : data_start + end]
        tensors.append((name, raw.view(dtype).view(info["shape"])))
    return tensors


def pack_bucket(bucket: Bucket, device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict[str, Any]]:
    """One flat uint8 buffer on `device` holding the bucket (cast on the way in) and the metadata to unpack it."""
    ordered = bucket.ordered()
    flat = torch.empty(bucket.num_bytes, dtype=torch.uint8, device=device)
    offset = 0
    for _, tensor in ordered:
        dtype = bucket.target_dtype(tensor)
        nbytes = tensor.numel() * _element_size(dtype)
        flat[offset : offset + nbytes].view(dtype).copy_(tensor.reshape(-1))
        offset += nbytes
    meta: dict[str, Any] = {
        "names": [name for name, _ in ordered],
        "dtype_names": [str(bucket.target_dtype(t)).removeprefix("torch.") for _, t in ordered],
        "shapes": [list(t.shape) for _, t in ordered],
    }
    return flat, meta


def unpack_bucket(flat: torch.Tensor, names: list[str], dtype_names: list[str], shapes: list[list[int]]):
    """Views of `flat` named as `pack_bucket` wrote them; checks the sizes add up."""
    if not len(names) == len(dtype_names) == len(shapes):
        raise ValueError(f"bucket metadata lists differ in length: {len(names)}, {len(dtype_names)}, {len(shapes)}")
    tensors: list[tuple[str, torch.Tensor]] = []
    offset = 0
    for name, dtype_name, shape in zip(names, dtype_names, shapes, strict=True):
        dtype = dtype_from_name(dtype_name)
        if dtype is None:
            raise ValueError(f"bucket tensor {name!r} has dtype 'auto'; a concrete dtype is required")
        numel = 1
        for dim in shape:
            numel *= dim
        nbytes = numel * _element_size(dtype)
        if offset + nbytes > flat.numel():
            raise ValueError(f"bucket metadata asks for {offset + nbytes} bytes but the buffer has {flat.numel()}")
        tensors.append((name, flat[offset : offset + nbytes].view(dtype).view(shape)))
        offset += nbytes
    if offset != flat.numel():
        raise ValueError(f"bucket buffer has {flat.numel()} bytes but its metadata covers {offset}")
    return tensors


def packed_size(meta: dict[str, Any]) -> int:
    """Bytes of the flat buffer `pack_bucket` built for `meta`."""
    total = 0
    for dtype_name, shape in zip(meta["dtype_names"], meta["shapes"], strict=True):
        dtype = dtype_from_name(dtype_name)
        assert dtype is not None
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel * _element_size(dtype)
    return total
