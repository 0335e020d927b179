"""Bucketing and the shared-memory file format: bounded, exact, readable by the safetensors library."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from nemo_spatial.generation.buckets import (
    iter_buckets,
    new_scratch,
    pack_bucket,
    packed_size,
    read_bucket,
    unpack_bucket,
    write_bucket,
)


def _weights(sizes: list[int], dtype: torch.dtype = torch.float32) -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(f"layers.{i}.w", torch.randn(size, generator=generator).to(dtype)) for i, size in enumerate(sizes)]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=30), bucket_bytes=st.integers(4, 2000))
def test_buckets_are_bounded_ordered_and_complete(sizes: list[int], bucket_bytes: int) -> None:
    weights = _weights(sizes)
    buckets = list(iter_buckets(iter(weights), bucket_bytes, dtype=torch.bfloat16))
    for bucket in buckets:  # sizes count the bf16 bytes sent, not the fp32 source
        assert bucket.num_bytes <= bucket_bytes or len(bucket.tensors) == 1  # an oversized tensor travels alone
        assert bucket.num_bytes == sum(t.numel() * 2 for _, t in bucket.tensors)
    assert [name for bucket in buckets for name in bucket.names] == [name for name, _ in weights]


def test_buckets_reference_the_trainers_tensors_instead_of_copying() -> None:
    weights = _weights([10, 20])
    (bucket,) = iter_buckets(iter(weights), 1 << 20, dtype=torch.bfloat16)
    assert [t.data_ptr() for _, t in bucket.tensors] == [t.data_ptr() for _, t in weights]


def test_tied_and_strided_tensors_are_written_as_their_own_values(tmp_path) -> None:
    """Tied embeddings share storage with the head; a transposed view is not contiguous."""
    embedding = torch.randn(8, 4)
    weights = [("model.embed_tokens.weight", embedding), ("lm_head.weight", embedding), ("t.weight", embedding.t())]
    (bucket,) = iter_buckets(iter(weights), 10_000, dtype=None)
    path = tmp_path / "tied.safetensors"
    write_bucket(bucket, path)
    embedding.add_(1.0)  # the trainer's next step must not change what was sent
    read = dict(read_bucket(path))
    assert torch.equal(read["lm_head.weight"] + 1.0, embedding) and torch.equal(read["t.weight"] + 1.0, embedding.t())


def test_chunked_casting_through_a_tiny_scratch_is_exact(tmp_path) -> None:
    weights = _weights([1000, 7, 333])
    (bucket,) = iter_buckets(iter(weights), 1 << 20, dtype=torch.bfloat16)
    write_bucket(bucket, tmp_path / "a.safetensors", new_scratch(64))  # 32 bf16 values per chunk
    read = dict(read_bucket(tmp_path / "a.safetensors"))
    for name, tensor in weights:
        assert torch.equal(read[name], tensor.to(torch.bfloat16)), name


def test_duplicate_names_are_refused() -> None:
    weights = [("a", torch.ones(2)), ("a", torch.ones(2))]
    with pytest.raises(ValueError, match="'a' appears twice"):
        list(iter_buckets(iter(weights), 100, dtype=None))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, None])
def test_bucket_file_round_trip_is_exact_and_standard(tmp_path, dtype) -> None:
    mixed = [("a.bias", torch.randn(3).to(torch.bfloat16)), ("b.weight", torch.randn(5, 7)), ("c", torch.randn(()))]
    mixed.append(("d.int", torch.arange(6, dtype=torch.int64).reshape(2, 3)))
    (bucket,) = iter_buckets(iter(mixed), 1 << 20, dtype=None if dtype is None else dtype)
    path = tmp_path / "bucket.safetensors"
    nbytes = write_bucket(bucket, path)
    assert nbytes == path.stat().st_size
    ours = dict(read_bucket(path))
    with safe_open(str(path), framework="pt") as reference:
        theirs = {name: reference.get_tensor(name) for name in reference.keys()}  # noqa: SIM118
    assert set(ours) == set(theirs) == {name for name, _ in mixed}
    for name, tensor in bucket.tensors:
        expected = tensor.to(bucket.target_dtype(tensor))
        assert ours[name].dtype == expected.dtype and torch.equal(ours[name], expected)
        assert torch.equal(theirs[name], expected)


def test_read_bucket_rejects_garbage(tmp_path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_bucket(path)


def test_pack_unpack_round_trip_and_size_check() -> None:
    mixed = [*_weights([5, 1, 12], torch.bfloat16), ("x", torch.randn(3)), ("y", torch.randn(4, 3).t())]
    for dtype in (None, torch.float16):
        (bucket,) = iter_buckets(iter(mixed), 1 << 20, dtype)
        flat, meta = pack_bucket(bucket)
        assert flat.dtype == torch.uint8 and flat.numel() == packed_size(meta) == bucket.num_bytes
        unpacked = dict(unpack_bucket(flat, meta["names"], meta["dtype_names"], meta["shapes"]))
        for name, tensor in mixed:
            assert torch.equal(unpacked[name], tensor.to(dtype or tensor.dtype)), name
    with pytest.raises(ValueError, match="buffer has"):
        unpack_bucket(flat[:-2], meta["names"], meta["dtype_names"], meta["shapes"])
