"""What the trainer calls for rewards: in its own process, or the remote reward server; the same numbers either way.

    client = make_reward_client(cfg)       # cfg.reward_service.mode: "local" or "remote"
    batch = client.score_batch(samples)    # BatchResult: one RewardResult per sample, in order, errors counted
    client.close()

Both clients deliver every component as a float32 value (`float(np.float32(x))`): the v2 outputs are FP32, as
Aligner's `rewards`, and the trainer's reward tensors are float32 anyway, so switching modes changes no number.
Both refuse the same samples the same way: a field that is not a string, or text that cannot be sent as UTF-8
(a lone surrogate), gets reward 0 and a per-sample error, as RewardScorer does for a non-string field.

The remote client splits a rollout into requests of `batch_size` samples, sends up to `max_in_flight` at once
(urllib3 connection pool, one thread each), and puts the answers back in order. A lost connection, a timeout,
or a 429/502/503/504 is retried `retries` times with doubling, jittered backoff (scoring is a pure function, so
a retry is safe): a server that is shutting down answers its last requests 503, and a restarted one takes them
up. A 429/503 that says when to come back (`Retry-After`, seconds or an HTTP date) is waited for that long
instead, bounded by `backoff_max_s`. Any other 4xx/5xx is raised at once with the server's message.
`upstream_exact` travels with a request (the `upstream_exact` input) only when it is true or the server's own
default is true (its metadata's `default_upstream_exact`): a server from before the switch refuses the unknown
input with 400, and scores as upstream_exact=false anyway. The constructor
checks the server once, without retrying, so an unreachable server fails fast with its host and port.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np
import urllib3

from nemo_spatial.reward import kserve
from nemo_spatial.reward.batch import DEFAULT_TIME_BUDGET_S, BatchResult, RewardResult, RewardSample, RewardScorer
from nemo_spatial.reward.config import RewardServiceConfig, parse_url
from nemo_spatial.reward.service_model import (
    ERRORS_OUTPUT,
    PRESET_INPUT,
    SAMPLE_INPUTS,
    SCORE_OUTPUTS,
    UPSTREAM_EXACT_INPUT,
)
from nemo_spatial.reward.similarity import make_similarity

if TYPE_CHECKING:
    from nemo_spatial.config import Config

logger = logging.getLogger(__name__)
RETRY_STATUSES = frozenset((429, 502, 503, 504))
FIELDS = ("response", "ground_truth", "problem")


class RewardServiceError(RuntimeError):
    """The remote reward server could not score a batch; the message names the server and the cause."""


class RewardClient(Protocol):
    def score_batch(self, samples: Sequence[RewardSample]) -> BatchResult: ...

    def sample_fields(self, response: str) -> dict[str, Any]:
        """What the reward read from a response, for the rollout samples a person reads (JSON-able)."""
        ...

    def close(self) -> None: ...


def sample_fields(response: str) -> dict[str, Any]:
    """The <scene> block as the reward reads it ({} when missing or not valid JSON), under "scene_graph"."""
    from nemo_spatial.reward.parsing import parse_scene

    return {"scene_graph": parse_scene(response)}


def make_reward_client(cfg: Config) -> RewardClient:
    """The client `cfg.reward_service.mode` asks for, scoring with `cfg.reward`'s preset and similarity."""
    reward = cfg.reward
    if cfg.reward_service.mode == "remote":
        return RemoteRewardClient(cfg.reward_service, reward.preset, reward.similarity, reward.upstream_exact)
    return LocalRewardClient(
        reward.preset, reward.similarity, reward.similarity_model, reward.upstream_exact, reward.sample_time_budget_s
    )


class LocalRewardClient:
    """Scores in the calling process with RewardScorer, at the wire's float32 precision."""

    def __init__(
        self,
        preset: str,
        similarity: str = "auto",
        similarity_model: str = "en_core_web_md",
        upstream_exact: bool = False,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    ) -> None:
        similarity_backend = make_similarity(similarity, similarity_model)
        self.scorer = RewardScorer(preset, similarity_backend, upstream_exact, time_budget_s)

    def score_batch(self, samples: Sequence[RewardSample]) -> BatchResult:
        results = [_unsendable(sample) or self.scorer.score_one(sample) for sample in samples]
        return summarise([_float32(result) for result in results])

    def sample_fields(self, response: str) -> dict[str, Any]:
        return sample_fields(response)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalRewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteRewardClient:
    """Scores on the KServe v2 reward server at `service.url`; see the module docstring."""

    def __init__(
        self, service: RewardServiceConfig, preset: str, similarity: str = "auto", upstream_exact: bool = False
    ) -> None:
        self.service, self.preset, self.upstream_exact = service, preset, upstream_exact
        _, self.host, self.port = parse_url(service.url)
        self.where = f"{self.host}:{self.port}"
        self._pool = urllib3.connection_from_url(
            service.url,
            maxsize=service.max_in_flight,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=service.connect_timeout_s, read=service.timeout_s),
        )
        self._headers: dict[str, str] = {}
        token = os.environ.get(service.token_env) if service.token_env else None
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._model_path = f"/v2/models/{service.model_name}"
        self._threads = ThreadPoolExecutor(service.max_in_flight, thread_name_prefix="reward-client")
        self.metadata = self._check_server(similarity)
        # A server started with reward.upstream_exact=true must be told false; one from before the switch says
        # nothing of it (and refuses the input).
        self._server_exact = bool(self.metadata.get("parameters", {}).get("default_upstream_exact", False))

    def _check_server(self, similarity: str) -> dict[str, Any]:
        """One GET of the model's metadata, no retry: fail fast, and refuse a server that scores differently."""
        try:
            response = self._pool.request("GET", self._model_path, headers=self._headers, retries=False)
        except urllib3.exceptions.HTTPError as error:
            self.close()
            raise RewardServiceError(
                f"reward server {self.where} is unreachable ({_reason(error)}). Start it with "
                f"`python -m nemo_spatial.reward.serve --port {self.port}` and the trainer's config, "
                "or set reward_service.mode=local"
            ) from None
        if response.status != 200:
            self.close()
            raise RewardServiceError(f"reward server {self.where}: {response.status} {_message(response.data)}")
        metadata = msgspec.json.decode(response.data)
        inputs = {entry.get("name") for entry in metadata.get("inputs", [])}
        if not set(SAMPLE_INPUTS) <= inputs:
            self.close()
            raise RewardServiceError(
                f"{self.service.model_name} at {self.where} takes {sorted(inputs)}, not {list(SAMPLE_INPUTS)}: "
                "it is not this project's reward server (a token-only NeMo-Aligner reward model?)"
            )
        served = metadata.get("parameters", {}).get("similarity")
        if similarity != "auto" and served != similarity:
            self.close()
            raise RewardServiceError(
                f"reward server {self.where} matches labels with {served!r} but reward.similarity={similarity!r}; "
                "start the server with the trainer's config so both score the same"
            )
        logger.info("reward server %s: %s, label similarity %s", self.where, self.service.model_name, served)
        return metadata

    def score_batch(self, samples: Sequence[RewardSample]) -> BatchResult:
        results: list[RewardResult | None] = [_unsendable(sample) for sample in samples]
        todo = [i for i, result in enumerate(results) if result is None]
        chunks = [todo[i : i + self.service.batch_size] for i in range(0, len(todo), self.service.batch_size)]
        answers = self._threads.map(lambda chunk: self._score_chunk([samples[i] for i in chunk]), chunks)
        for chunk, answer in zip(chunks, answers, strict=True):
            for i, result in zip(chunk, answer, strict=True):
                results[i] = result
        return summarise([result for result in results if result is not None])

    def sample_fields(self, response: str) -> dict[str, Any]:
        return sample_fields(response)

    def _score_chunk(self, samples: list[RewardSample]) -> list[RewardResult]:
        n = len(samples)
        tensors = [
            kserve.Tensor(name, "BYTES", (n, 1), [getattr(sample, field) for sample in samples])
            for name, field in zip(SAMPLE_INPUTS, FIELDS, strict=True)
        ]
        tensors.append(kserve.Tensor(PRESET_INPUT, "BYTES", (1, 1), [self.preset]))
        if self.upstream_exact or self._server_exact:  # see the module docstring
            exact = np.array([self.upstream_exact], dtype=np.bool_)
            tensors.append(kserve.Tensor(UPSTREAM_EXACT_INPUT, "BOOL", (1, 1), exact))
        request_id = f"{os.getpid()}-{id(samples)}-{time.monotonic_ns()}"
        body, headers = kserve.encode_request(tensors, self.service.binary_data, request_id=request_id)
        content, header_length = self._post(body, {**self._headers, **headers}, n)
        try:
            answer_id, outputs = kserve.decode_response(content, header_length)
            return _results(outputs, n, answer_id, request_id)
        except (kserve.ProtocolError, ValueError, KeyError) as error:
            raise RewardServiceError(f"reward server {self.where} sent an answer that does not fit: {error}") from None

    def _post(self, body: bytes, headers: dict[str, str], n: int) -> tuple[bytes, str | None]:
        failure = ""
        for attempt in range(self.service.retries + 1):
            asked: float | None = None  # the server's Retry-After, seconds
            try:
                response = self._pool.urlopen("POST", f"{self._model_path}/infer", body=body, headers=headers)
            except urllib3.exceptions.HTTPError as error:
                failure = _reason(error)
            else:
                if response.status == 200:
                    return response.data, response.headers.get(kserve.HEADER_LENGTH)
                failure = f"HTTP {response.status}: {_message(response.data)}"
                if response.status not in RETRY_STATUSES:
                    raise RewardServiceError(f"reward server {self.where} refused a batch of {n} samples: {failure}")
                if response.status in (429, 503):
                    asked = retry_after_s(response.headers.get("Retry-After"))
            if attempt < self.service.retries:
                # Jitter, so that the ranks of a job that lost the server together do not return in lockstep.
                delay = min(self.service.backoff_s * 2**attempt, self.service.backoff_max_s) * random.uniform(0.5, 1)
                if asked is not None:  # the server said when: as asked, within backoff_max_s
                    delay = min(asked, self.service.backoff_max_s)
                logger.warning(
                    "reward server %s: %s; retry %d of %d in %.1f s",
                    self.where,
                    failure,
                    attempt + 1,
                    self.service.retries,
                    delay,
                )
                time.sleep(delay)
        raise RewardServiceError(
            f"reward server {self.where} failed a batch of {n} samples {self.service.retries + 1} times; last: "
            f"{failure}. Is it running (`python -m nemo_spatial.reward.serve --port {self.port}`)?"
        )

    def close(self) -> None:
        if hasattr(self, "_threads"):
            self._threads.shutdown(wait=False)
        self._pool.close()

    def __enter__(self) -> RemoteRewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _results(outputs: dict[str, kserve.Tensor], n: int, answer_id: str | None, request_id: str) -> list[RewardResult]:
    if answer_id != request_id:
        raise ValueError(f"answer id {answer_id!r} is not the request's {request_id!r}")
    columns = []
    for name in (*SCORE_OUTPUTS, ERRORS_OUTPUT):
        data = outputs[name].data
        if data is None or len(data) != n:
            raise ValueError(f"output {name!r} has {0 if data is None else len(data)} values for {n} samples")
        columns.append(data.tolist() if isinstance(data, np.ndarray) else data)
    return [
        RewardResult(overall, fmt, count, accuracy, spatial, error or None)
        for overall, fmt, count, accuracy, spatial, error in zip(*columns, strict=True)
    ]


def _unsendable(sample: RewardSample) -> RewardResult | None:
    """The per-sample error for a sample neither client scores (identically), else None."""
    for name in FIELDS:
        value = getattr(sample, name)
        if not isinstance(value, str):
            problem = f"TypeError: {name} must be a string, got {type(value).__name__}"
        elif value.isascii():
            continue
        else:
            try:
                value.encode()
                continue
            except UnicodeEncodeError as error:
                problem = f"UnicodeEncodeError: {name} is not valid Unicode text ({error.reason} at {error.start})"
        return RewardResult(0.0, 0.0, 0.0, 0.0, 0.0, error=problem)
    return None


def _float32(result: RewardResult) -> RewardResult:
    values = np.asarray([getattr(result, name) for name in SCORE_OUTPUTS.values()], dtype=np.float32).tolist()
    overall, fmt, count, accuracy, spatial = values
    return RewardResult(overall, fmt, count, accuracy, spatial, result.error)


def summarise(results: list[RewardResult]) -> BatchResult:
    """A BatchResult with its errors counted and the first few logged, as RewardScorer.score_batch does."""
    errors = [(i, result.error) for i, result in enumerate(results) if result.error is not None]
    batch = BatchResult(results, len(errors), [f"sample {i}: {message}" for i, message in errors[:5]])
    if errors:
        logger.warning(
            "%d of %d samples could not be scored (reward 0); first: %s",
            len(errors),
            len(results),
            "; ".join(batch.first_errors),
        )
    return batch


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP date; RFC 9110 10.2.3); None when
    absent or unreadable (the client's own backoff applies then)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    return f"{type(reason).__name__}: {text}"


def _message(body: bytes) -> str:
    try:
        return str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
