"""Bounded buckets of (name, tensor) pairs, and their staging as safetensors files in shared memory.

What it computes:
- `iter_buckets`: groups a stream of full HF-named tensors into buckets whose byte size (after the cast to
  the engine's dtype) is at most `bucket_bytes`; a single tensor larger than the bound travels alone. Only
  one bucket is held at a time, so peak extra memory is bounded by the bucket size, not the model size.
  Each tensor is cast and made contiguous into its own storage (tied embeddings share storage with the
  output head; the trainer's buffers change at the next step), the copy the stack notes call for.
- `write_bucket` / `read_bucket`: one bucket as one file in the standard safetensors layout (8-byte header
  length, JSON header, raw bytes, no holes), written tensor by tensor straight from each tensor's memory
  (no intermediate `bytes` copy, unlike `safetensors.torch.save_file`) and read back as zero-copy views of
  a private memory map (`torch.from_file`). Within a bucket tensors are ordered by decreasing element size,
  so every view is aligned. Any safetensors reader can open these files.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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


@dataclass
class Bucket:
    """Tensors staged together: cast, contiguous, in their own storage."""

    tensors: list[tuple[str, torch.Tensor]]

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self.tensors)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.tensors]


def dtype_from_name(name: str) -> torch.dtype | None:
    """'bfloat16' -> torch.bfloat16; 'auto' -> None (keep each tensor's dtype)."""
    if name == "auto":
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {name!r} is not a torch dtype; use bfloat16, float16, float32 or auto")
    return dtype


def staged_copy(tensor: torch.Tensor, dtype: torch.dtype | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """A contiguous copy in its own storage, cast to `dtype` (None: keep), on `device`."""
    source = tensor.detach()
    target_dtype = dtype or source.dtype
    if target_dtype not in _ST_DTYPES:
        raise ValueError(f"cannot stage a tensor of dtype {target_dtype}; cast the policy's weights to a float dtype")
    copy = source.to(device=device, dtype=target_dtype, copy=True)
    return copy.contiguous()


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    bucket_bytes: int,
    dtype: torch.dtype | None,
    device: torch.device | str = "cpu",
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
        nbytes = tensor.numel() * (tensor.element_size() if dtype is None else _element_size(dtype))
        if current and current_bytes + nbytes > bucket_bytes:
            yield Bucket(current)
            current, current_bytes = [], 0
        current.append((name, staged_copy(tensor, dtype, device)))
        current_bytes += nbytes
    if current:
        yield Bucket(current)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def write_bucket(bucket: Bucket, path: str | os.PathLike[str]) -> int:
    """Write `bucket` to `path` (via a temporary name, so readers never see half a file); returns bytes."""
    ordered = sorted(bucket.tensors, key=lambda item: -item[1].element_size())
    header: dict[str, object] = {}
    offset = 0
    for name, tensor in ordered:
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _ST_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads the header to 8 bytes
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for _, tensor in ordered:
            if tensor.numel():
                handle.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
    tmp.rename(path)
    return 8 + len(encoded) + offset


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


def pack_bucket(bucket: Bucket) -> tuple[torch.Tensor, dict[str, Any]]:
    """One flat uint8 buffer holding the bucket (for a broadcast) and the metadata to unpack it."""
    ordered = sorted(bucket.tensors, key=lambda item: -item[1].element_size())
    total = sum(t.numel() * t.element_size() for _, t in ordered)
    device = ordered[0][1].device if ordered else torch.device("cpu")
    flat = torch.empty(total, dtype=torch.uint8, device=device)
    offset = 0
    for _, tensor in ordered:
        nbytes = tensor.numel() * tensor.element_size()
        flat[offset : offset + nbytes].copy_(tensor.reshape(-1).view(torch.uint8))
        offset += nbytes
    meta: dict[str, Any] = {
        "names": [name for name, _ in ordered],
        "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in ordered],
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
