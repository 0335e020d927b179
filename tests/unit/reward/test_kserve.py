"""The v2 body codec against tritonclient's own encoder and decoder, and its answers to malformed bodies."""

import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton_http

from nemo_spatial.reward import kserve

TEXTS = ["plain", "", "ünïcødé ✓", '<scene>{"objects": []}</scene>' * 50]


def _triton_inputs(binary: bool) -> list[triton_http.InferInput]:
    array = np.array([t.encode() for t in TEXTS], dtype=np.object_).reshape(-1, 1)
    text = triton_http.InferInput("sentences", list(array.shape), "BYTES")
    text.set_data_from_numpy(array, binary_data=binary)
    numbers = triton_http.InferInput("scale", [2], "FP32")
    numbers.set_data_from_numpy(np.array([0.5, -2.25], dtype=np.float32), binary_data=binary)
    return [text, numbers]


@pytest.mark.parametrize("binary", [True, False])
def test_decodes_what_tritonclient_sends(binary):
    body, json_size = triton_http.InferenceServerClient.generate_request_body(_triton_inputs(binary), request_id="r-7")
    request = kserve.decode_request(body, None if json_size is None else str(json_size))
    assert request.id == "r-7" and request.outputs is None and request.binary_output is True
    assert request.inputs["sentences"].shape == (4, 1) and request.inputs["sentences"].data == TEXTS
    scale = request.inputs["scale"]
    assert scale.datatype == "FP32" and np.array_equal(scale.data, np.array([0.5, -2.25], dtype=np.float32))


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_reads_what_the_server_encodes(binary):
    rewards = np.array([0.1, 0.97470003, 1.0], dtype=np.float32)
    outputs = [
        kserve.Tensor("rewards", "FP32", (3, 1), rewards),
        kserve.Tensor("errors", "BYTES", (3, 1), ["", "ValueError: no size", ""]),
    ]
    body, headers = kserve.encode_response(
        "reward_model", "1", "abc", outputs, {"rewards", "errors"} if binary else set()
    )
    result = triton_http.InferenceServerClient.parse_response_body(
        body, header_length=headers.get(kserve.HEADER_LENGTH)
    )
    assert result.get_response()["id"] == "abc"
    assert np.array_equal(result.as_numpy("rewards").ravel(), rewards)  # float32 exactly, JSON included
    errors = [e.decode() if isinstance(e, bytes) else e for e in result.as_numpy("errors").ravel()]
    assert errors == ["", "ValueError: no size", ""]


@pytest.mark.parametrize("binary", [True, False])
def test_own_client_side_round_trip(binary):
    inputs = [kserve.Tensor("sentences", "BYTES", (4,), TEXTS)]
    body, headers = kserve.encode_request(inputs, binary, request_id="x")
    assert (kserve.HEADER_LENGTH in headers) == binary
    request = kserve.decode_request(body, headers.get(kserve.HEADER_LENGTH))
    assert request.inputs["sentences"].data == TEXTS and request.binary_output == binary
    answer = [kserve.Tensor("rewards", "FP32", (2,), np.array([0.25, 0.3], dtype=np.float32))]
    body, headers = kserve.encode_response("m", "1", "x", answer, {"rewards"} if binary else set())
    answer_id, outputs = kserve.decode_response(body, headers.get(kserve.HEADER_LENGTH))
    assert answer_id == "x" and outputs["rewards"].data.tolist() == [0.25, np.float32(0.3).item()]


def test_nested_json_data_is_flattened_and_deep_nesting_does_not_recurse():
    entry = {"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}
    assert kserve.decode_request(json.dumps({"inputs": [entry]}).encode(), None).inputs["s"].data == ["a", "b"]
    deep = "[" * 5000 + '"a"' + "]" * 5000
    body = ('{"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": ' + deep + "}]}").encode()
    try:
        assert kserve.decode_request(body, None).inputs["s"].data == ["a"]
    except kserve.ProtocolError as error:  # the JSON parser's own depth limit is a clean 400 too
        assert "not valid JSON" in str(error)


def test_serialized_empty_strings_are_zero_lengths():
    assert kserve.serialize_bytes(["", ""]) == bytes(8)
    assert kserve.serialize_bytes(["ab", ""]) == struct.pack("<I", 2) + b"ab" + bytes(4)


def _entry(**overrides):
    return {"name": "sentences", "datatype": "BYTES", "shape": [1], "data": ["a"]} | overrides


def _json_body(*entries, **top):
    return json.dumps({"inputs": list(entries), **top}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"\x00\xff garbage \x13", None, "request header is not valid JSON"),
        (b"", None, "request body is empty"),
        (b"[1, 2]", None, "must be a JSON object with 'inputs'"),
        (b'{"inputs": 3}', None, "must have 'inputs', a list"),
        (_json_body(_entry(), id=5), None, "'id' must be a string"),
        (_json_body(_entry(datatype="STRING")), None, "has datatype 'STRING'"),
        (_json_body(_entry(shape=[-1])), None, "a shape is a list of non-negative integers"),
        (_json_body(_entry(shape="1")), None, "a shape is a list of non-negative integers"),
        (_json_body(_entry(shape=[2])), None, "'data' has 1 elements, its shape says 2"),
        (_json_body(_entry(data=[7])), None, "element 0 is int; BYTES data are strings"),
        (_json_body(_entry(data="a")), None, "'data' must be a (nested) list"),
        (_json_body(_entry(), _entry()), None, "'sentences' is given twice"),
        (_json_body({"datatype": "BYTES"}), None, "input 0 must be an object with a string 'name'"),
        (_json_body({"name": "s", "datatype": "BYTES", "shape": [1]}), None, "neither 'data' nor"),
        (_json_body(_entry(datatype="FP32", data=["x"])), None, "not FP32"),
        (_json_body(_entry(), outputs=[{"name": "r", "parameters": {"binary_data": 1}}]), None, "true or false"),
        (_json_body(_entry(), parameters={"binary_data_output": "yes"}), None, "true or false"),
        (_json_body(_entry()), "x", "is not an integer"),
        (_json_body(_entry()), "100000", "must be in [1,"),
    ],
)
def test_malformed_json_bodies_name_what_is_wrong(body, header_length, message):
    with pytest.raises(kserve.ProtocolError) as caught:
        kserve.decode_request(body, header_length)
    assert message in str(caught.value) and caught.value.status == 400


def _binary_body(raw: bytes, size: int | None = None, count: int = 1) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ]
        }
    ).encode()
    return header + raw, str(len(header))


@pytest.mark.parametrize(
    ("raw", "size", "count", "message"),
    [
        (struct.pack("<I", 3) + b"abc", 99, 1, "does not fit the 7 binary bytes"),
        (struct.pack("<I", 30) + b"abc", None, 1, "element 0 says 30 bytes; only 3 remain"),
        (struct.pack("<I", 3) + b"abc" + b"zz", None, 1, "2 bytes left after its 1 elements"),
        (struct.pack("<I", 2) + b"\xff\xfe", None, 1, "element 0 is not UTF-8 text"),
        (struct.pack("<I", 1) + b"a", None, 10**12, "cannot hold them"),
        (struct.pack("<I", 2) + b"ab" + b"\x01\x00", None, 2, "binary data ends inside element 1"),
    ],
)
def test_malformed_binary_tensors_name_what_is_wrong(raw, size, count, message):
    body, header_length = _binary_body(raw, size, count)
    with pytest.raises(kserve.ProtocolError, match="input 's'|binary") as caught:
        kserve.decode_request(body, header_length)
    assert message in str(caught.value)


def test_bytes_after_the_last_tensor_are_an_error():
    body, header_length = _binary_body(struct.pack("<I", 1) + b"a")
    with pytest.raises(kserve.ProtocolError, match="3 bytes follow the last binary tensor"):
        kserve.decode_request(body + b"xyz", header_length)
