"""The NCCL weight transport between two GPU processes (trainer rank 0, a worker-side receiver rank 1).

The same protocol runs over gloo on CPU in tests/unit/generation/test_transport.py and against a real vLLM
server in tests/e2e/generation; this adds the production backend (vLLM's StatelessProcessGroup +
PyNcclCommunicator). NCCL needs one device per rank, hence two GPUs.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from tests.unit.generation.test_transport import QueueControl, _model_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the NCCL transport test needs 2 CUDA GPUs"),
]


def _nccl_receiver(spec_args, metadata, results, done) -> None:
    torch.cuda.set_device(1)
    from nemo_spatial.generation.broadcast import BroadcastGroup, GroupSpec
    from nemo_spatial.generation.buckets import unpack_bucket

    group = BroadcastGroup(GroupSpec(**spec_args), rank=1)
    received = {}
    while (meta := metadata.get(timeout=120)) is not None:
        flat = torch.empty(meta.pop("nbytes"), dtype=torch.uint8, device="cuda:1")
        group.broadcast(flat)
        received.update(
            {k: v.cpu() for k, v in unpack_bucket(flat, meta["names"], meta["dtype_names"], meta["shapes"])}
        )
        results.put("ack")
    results.put(received)
    done.wait(timeout=120)  # the tensors are served from this process until taken


def test_nccl_broadcast_transport_delivers_exact_weights() -> None:
    pytest.importorskip("vllm")
    from nemo_spatial.generation.broadcast import GroupSpec
    from nemo_spatial.generation.transport import BroadcastTransport
    from nemo_spatial.net import free_port

    torch.cuda.set_device(0)
    spec = GroupSpec("nccl", "127.0.0.1", free_port(), world_size=2, timeout_s=120)
    context = mp.get_context("spawn")
    metadata, results, done = context.Queue(), context.Queue(), context.Event()
    receiver = context.Process(target=_nccl_receiver, args=(vars(spec), metadata, results, done), daemon=True)
    receiver.start()
    try:
        transport = BroadcastTransport(QueueControl(metadata, results), spec, 20_000, "bfloat16")
        weights = _model_weights(seed=2)
        stats = transport.sync(iter(weights.items()), version=1)
        received = results.get(timeout=120)
        transport.close()
    finally:
        done.set()
        receiver.join(timeout=120)
        if receiver.is_alive():
            receiver.kill()
    assert stats.num_buckets > 2 and set(received) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(received[name], tensor.to(torch.bfloat16)), name
