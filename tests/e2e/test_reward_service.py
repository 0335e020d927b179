"""The remote reward service as a real process on 127.0.0.1: the v2 protocol through tritonclient, the same
numbers as in-process scoring, concurrent clients, and a clear 4xx for every kind of bad request."""

import gzip
import json
import signal
import struct
import threading
import zlib

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from nemo_spatial.config import load_config
from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.client import LocalRewardClient, RewardServiceError, make_reward_client
from nemo_spatial.reward.examples import worked_samples
from nemo_spatial.reward.service_model import OUTPUTS

from .reward_server import ServerProcess, json_infer_body, realistic_samples

MAX_REQUEST_MB = 1
MAX_BATCH = 2048
EXACT_SCENE_REWARD = float(
    np.float32(
        RewardScorer("spatialthinker", "trigram").score_one(worked_samples()["exact ground-truth scene"]).overall
    )
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(
        tmp_path_factory.mktemp("reward-server") / "server.log",
        f"reward_service.server.max_request_mb={MAX_REQUEST_MB}",
        f"reward_service.server.max_batch_size={MAX_BATCH}",
        "reward_service.server.chunk_size=64",
    )
    yield process
    # uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits "killed by SIGTERM".
    assert process.stop() == -signal.SIGTERM and "Application shutdown complete" in process.log(), process.log()
    assert "Traceback" not in process.log(), process.log()  # every bad request was answered, none crashed


@pytest.fixture(scope="module")
def samples():
    return [
        *worked_samples().values(),
        RewardSample("x", "y", "a prompt without an image size"),
        *realistic_samples(300),
    ]


def _triton_inputs(samples, binary=True, shape=None):
    inputs = []
    for name, field in (("sentences", "response"), ("ground_truth", "ground_truth"), ("problem", "problem")):
        array = np.array([getattr(s, field).encode() for s in samples], dtype=np.object_)
        array = array.reshape(shape or (-1, 1))
        tensor = triton_http.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _reference(samples, preset="spatialthinker"):
    return RewardScorer(preset, "trigram").score_batch(samples).results


def test_protocol_conformance_through_tritonclient(server):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("reward_model")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("reward_model")
    inputs = ["sentences", "ground_truth", "problem", "preset", "upstream_exact"]
    assert [t["name"] for t in metadata["inputs"]] == inputs
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]][:2] == [("rewards", "FP32"), ("format", "FP32")]
    assert metadata["parameters"]["similarity"] == "trigram"
    assert client.get_model_config("reward_model")["max_batch_size"] == MAX_BATCH
    assert client.get_model_metadata("reward_model", model_version="1")["name"] == "reward_model"
    with pytest.raises(InferenceServerException, match="unknown model 'policy'"):
        client.get_model_metadata("policy")
    client.close()


@pytest.mark.parametrize(("binary", "shape"), [(True, None), (False, None), (True, (-1,))])
def test_tritonclient_scores_equal_in_process_scores(server, samples, binary, shape):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    outputs = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    result = client.infer("reward_model", _triton_inputs(samples, binary, shape), outputs=outputs, request_id="q1")
    assert result.get_response()["id"] == "q1"
    reference = _reference(samples)
    for output, field in zip(OUTPUTS[:5], ("overall", "format", "count", "accuracy", "spatial"), strict=True):
        got = result.as_numpy(output)
        assert got.shape == (len(samples),) + ((1,) if shape is None else ())
        assert np.array_equal(got.ravel(), np.array([getattr(r, field) for r in reference], dtype=np.float32))
    errors = [e.decode() if isinstance(e, bytes) else e for e in result.as_numpy("errors").ravel()]
    assert errors == [r.error or "" for r in reference] and sum(map(bool, errors)) == 1
    assert abs(result.as_numpy("rewards").ravel()[0] - 1.0) < 1e-6  # worked example 1: the exact scene
    client.close()


def test_per_request_preset(server, samples):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = _triton_inputs(samples[:12])
    preset = triton_http.InferInput("preset", [1, 1], "BYTES")
    preset.set_data_from_numpy(np.array([[b"r1v"]], dtype=np.object_))
    result = client.infer("reward_model", [*inputs, preset])
    want = np.array([r.overall for r in _reference(samples[:12], "r1v")], dtype=np.float32)
    assert np.array_equal(result.as_numpy("rewards").ravel(), want)
    client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_remote_client_equals_local_client(server, samples, binary):
    overrides = [
        "reward.similarity=trigram",
        "reward_service.mode=remote",
        f"reward_service.url={server.url}",
        "reward_service.batch_size=37",
        "reward_service.max_in_flight=3",
        f"reward_service.binary_data={str(binary).lower()}",
    ]
    cfg = load_config(None, overrides)
    with make_reward_client(cfg) as remote:
        mixed = [*samples, RewardSample(5, "gt", "p"), RewardSample("\ud800", "gt", "p")]
        remote_batch = remote.score_batch(mixed)
    local_batch = LocalRewardClient("spatialthinker", "trigram").score_batch(mixed)
    assert remote_batch == local_batch  # every component, every error message, the counts, in order
    assert remote_batch.n_errors == 3 and len(remote_batch.results) == len(mixed)


def test_concurrent_clients_each_get_their_own_answers(server):
    cfg = load_config(
        None,
        [
            "reward.similarity=trigram",
            "reward_service.mode=remote",
            f"reward_service.url={server.url}",
            "reward_service.batch_size=64",
        ],
    )
    sets = [realistic_samples(150, seed=seed) for seed in range(6)]
    expected = [LocalRewardClient("spatialthinker", "trigram").score_batch(s) for s in sets]
    failures: list[str] = []

    def rank(i):
        with make_reward_client(cfg) as client:
            for _ in range(3):
                if client.score_batch(sets[i]) != expected[i]:
                    failures.append(f"client {i} got another's or wrong answers")

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(len(sets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures and not any(t.is_alive() for t in threads)


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _binary_body(raw: bytes, size: int | None = None, extra_json: str = "") -> tuple[bytes, dict[str, str]]:
    header = (
        json.dumps(
            {
                "inputs": [
                    {"name": n, "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}
                    for n in ("ground_truth", "problem")
                ]
                + [
                    {
                        "name": "sentences",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(raw) if size is None else size},
                    }
                ]
            }
        ).encode()
        + extra_json.encode()
    )
    return header + raw * 3, {"Inference-Header-Content-Length": str(len(header))}


ONE = _bytes_tensor([b"text"])
BAD_REQUESTS = {
    "garbage bytes": (b"\x8b\x00\xff\xfe garbage \x13\x37", {}, 400, "request header is not valid JSON"),
    "empty body": (b"", {}, 400, "request body is empty"),
    "JSON that is not an object": (b"[1, 2, 3]", {}, 400, "must be a JSON object with 'inputs'"),
    "missing inputs": (
        json_infer_body(problem=None, ground_truth=None),
        {},
        400,
        "missing input(s) ground_truth, problem",
    ),
    "wrong dtype": (
        json_infer_body(sentences={"name": "sentences", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}),
        {},
        400,
        "'sentences' must be BYTES",
    ),
    "wrong shape": (
        json_infer_body(problem={"name": "problem", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}),
        {},
        400,
        "use [B] or [B, 1]",
    ),
    "batch sizes disagree": (
        json_infer_body(problem={"name": "problem", "datatype": "BYTES", "shape": [3, 1], "data": ["a", "b", "c"]}),
        {},
        400,
        "inputs disagree",
    ),
    "shape and data disagree": (
        json_infer_body(problem={"name": "problem", "datatype": "BYTES", "shape": [2, 1], "data": ["a"]}),
        {},
        400,
        "'data' has 1 elements",
    ),
    "number as text": (
        json_infer_body(problem={"name": "problem", "datatype": "BYTES", "shape": [2, 1], "data": ["a", 3]}),
        {},
        400,
        "element 1 is int",
    ),
    "unknown input": (
        json_infer_body(image={"name": "image", "datatype": "UINT8", "shape": [1], "data": [0]}),
        {},
        400,
        "unknown input 'image'",
    ),
    "unknown preset": (
        json_infer_body(preset={"name": "preset", "datatype": "BYTES", "shape": [1], "data": ["gpt"]}),
        {},
        400,
        "'preset' is 'gpt'",
    ),
    "binary size past the body": (*_binary_body(ONE, size=999), 400, "does not fit"),
    "binary garbage (not UTF-8)": (*_binary_body(_bytes_tensor([b"\xff\xfe\xfd"])), 400, "not UTF-8 text"),
    "binary length prefix lies": (*_binary_body(struct.pack("<I", 10**6) + b"abc"), 400, "says 1000000 bytes"),
    "header length not a number": (
        json_infer_body(),
        {"Inference-Header-Content-Length": "ten"},
        400,
        "is not an integer",
    ),
    "huge payload": (b"{" + b" " * (MAX_REQUEST_MB * 3 << 20) + b"}", {}, 413, "over the server's limit of 1 MB"),
    "far too huge payload": (b" " * (MAX_REQUEST_MB * 5 << 20), {}, 413, "over the server's limit"),
    "too many samples": (
        json.dumps(
            {
                "inputs": [
                    {"name": n, "datatype": "BYTES", "shape": [MAX_BATCH + 1], "data": ["a"] * (MAX_BATCH + 1)}
                    for n in ("sentences", "ground_truth", "problem")
                ]
            }
        ).encode(),
        {},
        413,
        f"over this server's limit of {MAX_BATCH}",
    ),
    "gzip bomb": (gzip.compress(b" " * (MAX_REQUEST_MB * 8 << 20)), {"Content-Encoding": "gzip"}, 413, "limit"),
    "corrupt gzip": (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip data"),
    "unknown encoding": (json_infer_body(), {"Content-Encoding": "br"}, 415, "'br' is not supported"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx_and_valid_requests_keep_succeeding(server, case):
    body, headers, status, message = BAD_REQUESTS[case]
    answer = server.post(body, headers)
    assert answer.status == status, answer.data[:300]
    assert message in json.loads(answer.data)["error"]
    valid = server.post(json_infer_body(3))
    assert valid.status == 200 and json.loads(valid.data)["outputs"][0]["data"] == [EXACT_SCENE_REWARD] * 3


def test_compressed_requests_as_tritonclient_sends_them(server, samples):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    for algorithm in ("gzip", "deflate"):
        result = client.infer("reward_model", _triton_inputs(samples[:5]), request_compression_algorithm=algorithm)
        assert np.array_equal(
            result.as_numpy("rewards").ravel(), np.array([r.overall for r in _reference(samples[:5])], dtype=np.float32)
        )
    assert server.post(zlib.compress(json_infer_body()), {"Content-Encoding": "deflate"}).status == 200
    client.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v2/models/policy/infer", 404, "unknown model 'policy'; this server serves 'reward_model'"),
        ("POST", "/v2/models/reward_model/versions/2/infer", 404, "has no version '2'"),
        ("GET", "/v1/models/reward_model:predict", 404, "the v2 routes are under /v2"),
        ("GET", "/v2/models/reward_model/infer", 405, "Method Not Allowed"),
    ],
)
def test_wrong_routes_and_methods(server, method, path, status, message):
    answer = server.http.urlopen(method, path, body=json_infer_body() if method == "POST" else None)
    assert answer.status == status and message in json.loads(answer.data)["error"]


def test_tritonclient_sees_the_servers_message(server, samples):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    wrong = triton_http.InferInput("sentences", [2, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("reward_model", [wrong, *_triton_inputs(samples[:2])[1:]])
    assert caught.value.status() == "400" and "'sentences' must be BYTES (UTF-8 text), got FP32" in str(caught.value)
    client.close()


def test_client_raises_a_4xx_at_once_with_the_servers_message(server):
    cfg = load_config(
        None,
        [
            "reward.similarity=trigram",
            "reward_service.mode=remote",
            f"reward_service.url={server.url}",
            "reward_service.batch_size=4096",
        ],
    )
    with make_reward_client(cfg) as client, pytest.raises(RewardServiceError) as caught:
        client.score_batch(realistic_samples(MAX_BATCH + 1))
    assert f"127.0.0.1:{server.port} refused a batch of {MAX_BATCH + 1} samples: HTTP 413" in str(caught.value)


def test_client_refuses_a_server_that_matches_labels_differently(server):
    cfg = load_config(
        None, ["reward.similarity=spacy", "reward_service.mode=remote", f"reward_service.url={server.url}"]
    )
    with pytest.raises(RewardServiceError, match="matches labels with 'trigram' but reward.similarity='spacy'"):
        make_reward_client(cfg)
