"""The files of an exported Hugging Face model: sharded safetensors with an index, and the base model's others.

    plan = base_weights(base)                  # names and shapes of the base model's tensors (headers only)
    writer = ShardWriter(staging, max_shard_bytes)
    for name, tensor in weights: writer.add(name, tensor)
    writer.finish()                            # model-0000i-of-0000N.safetensors + model.safetensors.index.json
    copy_base_files(base, staging, dtype)      # config.json (dtype set), generation config, tokenizer, processor

Shards are named as `transformers.save_pretrained` names them and an index is always written (also for one
shard) so every export has the same layout. The shard count is known only at the end, so shards are written
under temporary names and renamed in `finish`; the whole folder is staged (fileio.staged_directory) and only
appears under its final name once complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nemo_spatial.fileio import staged_directory

if TYPE_CHECKING:
    import torch

WEIGHTS_INDEX = "model.safetensors.index.json"
# Files of the base model that an export does not copy: its weights (replaced) and its model card (rewritten).
SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
SKIPPED_NAMES = {WEIGHTS_INDEX, "pytorch_model.bin.index.json", "README.md", ".gitattributes"}
# Export dtypes and their bytes per element (torch itself is imported only when tensors are written).
DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
DEFAULT_SHARD_BYTES = 5 * 1000**3  # transformers' default max_shard_size ("5GB")


@dataclass(frozen=True)
class BaseWeights:
    """Names and shapes of the base model's tensors, read from the safetensors headers (no tensor is loaded)."""

    shapes: dict[str, tuple[int, ...]]

    def nbytes(self, dtype: str) -> int:
        return sum(_numel(shape) * DTYPES[dtype] for shape in self.shapes.values())


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name)  # type: ignore[no-any-return]


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def base_weights(base: Path) -> BaseWeights:
    from safetensors import safe_open

    files = sorted(base.glob("*.safetensors"))
    if not files:
        from nemo_spatial.errors import UserError

        raise UserError(f"the base model {base} has no *.safetensors weights; pass --base DIR with a HF model")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return BaseWeights(shapes)


def base_dtype(base: Path) -> str:
    """The dtype the base model is stored in (config.json `dtype`, older `torch_dtype`); bfloat16 if unset."""
    config = json.loads((base / "config.json").read_text())
    value = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    return str(value) if str(value) in DTYPES else "bfloat16"


def base_files(base: Path) -> list[Path]:
    """The base model's files an export copies: config, generation config, tokenizer, processor, chat template."""
    return sorted(
        p
        for p in base.iterdir()
        if p.is_file() and p.name not in SKIPPED_NAMES and not p.name.endswith(SKIPPED_SUFFIXES)
    )


def copy_base_files(base: Path, out: Path, dtype: str) -> None:
    """Copy the base's non-weight files; config.json records the export's dtype."""
    for path in base_files(base):
        if path.name == "config.json":
            config = json.loads(path.read_text())
            config["dtype"] = dtype
            config.pop("torch_dtype", None)
            (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copy2(path, out / path.name)


class ShardWriter:
    """Accumulates tensors and writes a safetensors shard each time `max_shard_bytes` would be exceeded."""

    def __init__(self, out: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        self.out, self.max_shard_bytes = out, max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.pending or any(name in names for _, names in self.shards):
            raise ValueError(f"tensor {name} exported twice")
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self.pending[name] = tensor.detach().contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        path = self.out / f"shard-{len(self.shards):05d}.partial"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> list[Path]:
        """Write the last shard, give every shard its final name and write the index; the shard paths."""
        if self.pending or not self.shards:
            self._flush()
        count = len(self.shards)
        weight_map: dict[str, str] = {}
        final = []
        for index, (path, names) in enumerate(self.shards, start=1):
            target = self.out / f"model-{index:05d}-of-{count:05d}.safetensors"
            path.rename(target)
            final.append(target)
            weight_map.update(dict.fromkeys(names, target.name))
        index_doc = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / WEIGHTS_INDEX).write_text(json.dumps(index_doc, indent=2) + "\n")
        return final


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A staging folder that becomes `out` when the block succeeds; an existing `out` is replaced only then.

    An empty `out` is removed first; a non-empty one needs `overwrite` (check_output refuses it earlier, with
    the message). On failure or a kill nothing named `out` changes (a leftover staging folder is `*.tmp-<pid>`).
    """
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        with staged_directory(out) as staging:
            yield staging
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    fresh = out.with_name(f"{out.name}.new-{os.getpid()}")
    with staged_directory(fresh) as staging:
        yield staging
    previous = out.with_name(f"{out.name}.old-{os.getpid()}")
    out.rename(previous)
    fresh.rename(out)
    shutil.rmtree(previous, ignore_errors=True)
