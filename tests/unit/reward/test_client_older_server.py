"""The remote reward client against a real HTTP server on 127.0.0.1 that behaves as an older reward server:
it knows no `upstream_exact` input (400 for it), and answers its first requests 503/429 with a Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import numpy as np
import pytest

from nemo_spatial.config import load_config
from nemo_spatial.reward import RewardScorer, kserve
from nemo_spatial.reward.client import RemoteRewardClient, RewardServiceError, retry_after_s
from nemo_spatial.reward.examples import worked_samples
from nemo_spatial.reward.service_model import (
    SCORE_OUTPUTS,
    UPSTREAM_EXACT_INPUT,
    Scores,
    build_outputs,
    model_metadata,
    parse_request,
    requested_outputs,
)

SAMPLES = list(worked_samples().values())


class OlderServer(ThreadingHTTPServer):
    """`refusals`: (status, Retry-After) answered to the first POSTs, in order; `posts`: when each arrived and
    the input names it carried."""

    def __init__(self, refusals: list[tuple[int, str]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.refusals = list(refusals)
        self.posts: list[tuple[float, set[str]]] = []
        self.scorer = RewardScorer("spatialthinker", "trigram")
        self.default_exact: bool | None = None  # None: an older server, which knows nothing of the switch


class _Handler(BaseHTTPRequestHandler):
    server: OlderServer

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        metadata = model_metadata("reward_model", "spatialthinker", "trigram", 512)
        if self.server.default_exact is None:  # before the switch
            metadata["inputs"] = [i for i in metadata["inputs"] if i["name"] != UPSTREAM_EXACT_INPUT]
            del metadata["parameters"]["default_upstream_exact"]
        else:
            metadata["parameters"]["default_upstream_exact"] = self.server.default_exact
        self._send(200, msgspec.json.encode(metadata), {"Content-Type": "application/json"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = kserve.decode_request(body, self.headers.get(kserve.HEADER_LENGTH))
        self.server.posts.append((time.monotonic(), set(request.inputs)))
        if self.server.refusals:
            status, after = self.server.refusals.pop(0)
            self._send(status, kserve.error_body("busy"), {"Retry-After": after})
            return
        if UPSTREAM_EXACT_INPUT in request.inputs and self.server.default_exact is None:
            self._send(400, kserve.error_body(f"unexpected input {UPSTREAM_EXACT_INPUT!r}"), {})
            return
        names, binary = requested_outputs(request)
        scoring = parse_request(request, "spatialthinker", 512)
        results = self.server.scorer.score_batch(SAMPLES[: len(scoring)]).results
        values = np.asarray([[getattr(r, f) for f in SCORE_OUTPUTS.values()] for r in results], np.float32).T
        outputs = build_outputs(names, scoring, Scores(values, [""] * len(results)))
        content, headers = kserve.encode_response("reward_model", "1", request.id, outputs, binary)
        self._send(200, content, headers)


@pytest.fixture
def older_server(request: pytest.FixtureRequest) -> Iterator[OlderServer]:
    server = OlderServer(getattr(request, "param", []))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server: OlderServer, upstream_exact: bool = False, backoff_max_s: float = 5.0) -> RemoteRewardClient:
    cfg = load_config(
        None,
        [f"reward_service.url=http://127.0.0.1:{server.server_address[1]}", "reward_service.backoff_s=0",
         f"reward_service.backoff_max_s={backoff_max_s}", "reward_service.retries=2"],
    )  # fmt: skip
    return RemoteRewardClient(cfg.reward_service, "spatialthinker", "auto", upstream_exact)


def test_upstream_exact_is_sent_only_when_true_so_an_older_server_still_scores(older_server: OlderServer) -> None:
    with _client(older_server) as client:
        batch = client.score_batch(SAMPLES)
    assert batch.n_errors == 0 and len(batch.results) == len(SAMPLES)
    assert UPSTREAM_EXACT_INPUT not in older_server.posts[0][1]
    with _client(older_server, upstream_exact=True) as client, pytest.raises(RewardServiceError, match="HTTP 400"):
        client.score_batch(SAMPLES)  # asked for upstream's values: it must not silently get the project's
    assert UPSTREAM_EXACT_INPUT in older_server.posts[-1][1]
    older_server.default_exact = True  # a newer server started with reward.upstream_exact=true: told false
    with _client(older_server) as client:
        client.score_batch(SAMPLES[:1])
    assert UPSTREAM_EXACT_INPUT in older_server.posts[-1][1]


@pytest.mark.parametrize("older_server", [[(503, "1"), (429, "60")]], indirect=True)
def test_retry_after_is_honoured_within_backoff_max_s(older_server: OlderServer) -> None:
    with _client(older_server, backoff_max_s=0.4) as client:
        client.score_batch(SAMPLES[:2])
    (first, _), (second, _), (third, _) = older_server.posts
    assert 0.38 <= second - first < 0.9  # Retry-After: 1, cut to backoff_max_s=0.4 (own backoff: backoff_s=0)
    assert 0.38 <= third - second < 0.9  # Retry-After: 60 likewise
    with _client(older_server, backoff_max_s=5.0) as client:
        older_server.refusals = [(503, "1")]
        client.score_batch(SAMPLES[:2])
    assert 0.95 <= older_server.posts[-1][0] - older_server.posts[-2][0] < 2.5  # as asked


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # in the past: at once
