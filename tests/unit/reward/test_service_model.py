"""The reward_model's tensor rules between a decoded v2 request and the scorer."""

import numpy as np
import pytest

from nemo_spatial.reward.kserve import InferRequest, ProtocolError, RequestedOutput, Tensor
from nemo_spatial.reward.service_model import (
    OUTPUTS,
    Scores,
    build_outputs,
    model_config,
    model_metadata,
    parse_request,
    requested_outputs,
)


def _request(n=3, shape=None, preset=None, **replace):
    shape = shape or (n, 1)
    inputs = {
        name: Tensor(name, "BYTES", shape, [f"{name}{i}" for i in range(n)])
        for name in ("sentences", "ground_truth", "problem")
    }
    if preset is not None:
        inputs["preset"] = Tensor("preset", "BYTES", (len(preset),), preset)
    for name, tensor in replace.items():
        if tensor is None:
            del inputs[name]
        else:
            inputs[name] = tensor
    return InferRequest("id", inputs, None, False)


def test_columns_shape_and_default_preset():
    scoring = parse_request(_request(3), "spatialthinker", 100)
    assert scoring.responses == ["sentences0", "sentences1", "sentences2"] and scoring.problems[2] == "problem2"
    assert scoring.segments == [("spatialthinker", False, 0, 3)] and scoring.shape == (3, 1) and len(scoring) == 3
    assert parse_request(_request(2, shape=(2,)), "r1v", 100).shape == (2,)


def test_one_preset_for_all_or_one_per_sample_in_runs():
    assert parse_request(_request(3, preset=["r1v"]), "spatialthinker", 9).segments == [("r1v", False, 0, 3)]
    per_sample = parse_request(_request(4, preset=["r1v", "r1v", "spatialthinker", "r1v"]), "r1v", 9)
    assert per_sample.segments == [("r1v", False, 0, 2), ("spatialthinker", False, 2, 3), ("r1v", False, 3, 4)]


@pytest.mark.parametrize(
    ("request_", "message", "status"),
    [
        (_request(problem=None, ground_truth=None), "missing input(s) ground_truth, problem", 400),
        (_request(extra=Tensor("extra", "BYTES", (3,), ["a"] * 3)), "unknown input 'extra'", 400),
        (_request(sentences=Tensor("sentences", "FP32", (3, 1), np.zeros(3))), "must be BYTES", 400),
        (_request(4, shape=(2, 2)), "has shape [2, 2]; use [B] or [B, 1]", 400),
        (_request(problem=Tensor("problem", "BYTES", (2, 1), ["a", "b"])), "inputs disagree on the batch", 400),
        (_request(3, preset=["r1v", "r1v"]), "input 'preset' has 2 values", 400),
        (_request(3, preset=["gpt"]), "input 'preset' is 'gpt'; use one of", 400),
        (_request(5), "batch of 5 samples is over this server's limit of 4", 413),
    ],
)
def test_requests_that_break_the_rules(request_, message, status):
    with pytest.raises(ProtocolError) as caught:
        parse_request(request_, "spatialthinker", 4)
    assert message in str(caught.value) and caught.value.status == status


def test_requested_outputs_and_binary_choice():
    request = _request()
    assert requested_outputs(request) == (list(OUTPUTS), set())
    request.binary_output = True
    assert requested_outputs(request) == (list(OUTPUTS), set(OUTPUTS))
    request.outputs = [RequestedOutput("spatial", None), RequestedOutput("errors", False)]
    assert requested_outputs(request) == (["spatial", "errors"], {"spatial"})
    request.outputs = [RequestedOutput("reward", True)]
    with pytest.raises(ProtocolError, match="unknown output 'reward'; reward_model has rewards, format"):
        requested_outputs(request)


def test_outputs_carry_the_columns_in_the_request_shape():
    scoring = parse_request(_request(2), "spatialthinker", 9)
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    tensors = build_outputs(["spatial", "rewards", "errors"], scoring, Scores(values, ["", "bad"]))
    assert [(t.name, t.datatype, t.shape) for t in tensors] == [
        ("spatial", "FP32", (2, 1)),
        ("rewards", "FP32", (2, 1)),
        ("errors", "BYTES", (2, 1)),
    ]
    assert tensors[0].data.tolist() == [8, 9] and tensors[1].data.tolist() == [0, 1] and tensors[2].data == ["", "bad"]


def test_metadata_and_config_describe_every_tensor():
    metadata = model_metadata("reward_model", "spatialthinker", "trigram", 64)
    assert [t["name"] for t in metadata["outputs"]] == list(OUTPUTS)
    assert metadata["parameters"]["similarity"] == "trigram"
    config = model_config("reward_model", 64)
    assert config["max_batch_size"] == 64
    assert [t["name"] for t in config["input"] if t.get("optional")] == ["preset", "upstream_exact"]
