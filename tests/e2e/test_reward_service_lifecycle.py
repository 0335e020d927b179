"""The reward server's life as a process: bearer-token auth, a scoring process dying under it, graceful shutdown,
and refusing to serve a non-loopback address without a token."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import tritonclient.http as triton_http

from nemo_spatial.config import load_config
from nemo_spatial.reward.client import LocalRewardClient, RewardServiceError, make_reward_client

from .reward_server import REPO, ServerProcess, json_infer_body, realistic_samples

TOKEN_ENV = "NEMO_SPATIAL_TEST_REWARD_TOKEN"
TOKEN = "s3cret-token-for-tests"
# A second server process plus two CLI runs: about a minute on 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    process = ServerProcess(
        tmp_path_factory.mktemp("secured") / "server.log",
        f"reward_service.token_env={TOKEN_ENV}",
        "reward_service.server.chunk_size=32",
        "reward_service.server.graceful_timeout_s=60",
        env={TOKEN_ENV: TOKEN},
    )
    yield process
    process.stop()


def _client_config(url: str, *extra: str):
    return load_config(
        None,
        [
            "reward.similarity=trigram",
            "reward_service.mode=remote",
            f"reward_service.url={url}",
            f"reward_service.token_env={TOKEN_ENV}",
            "reward_service.backoff_s=0.2",
            *extra,
        ],
    )


def test_bearer_token_guards_everything_but_health(secured, monkeypatch):
    assert secured.http.request("GET", "/v2/health/ready").status == 200  # probes need no token
    denied = secured.post(json_infer_body())
    assert denied.status == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
    assert f"${TOKEN_ENV}" in json.loads(denied.data)["error"]
    assert secured.post(json_infer_body(), {"Authorization": "Bearer wrong"}).status == 401
    assert secured.http.request("GET", "/v2/models/reward_model").status == 401
    triton = triton_http.InferenceServerClient(f"127.0.0.1:{secured.port}")
    metadata = triton.get_model_metadata("reward_model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metadata["name"] == "reward_model"
    triton.close()
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(RewardServiceError, match="401 missing or wrong bearer token"):
        make_reward_client(_client_config(secured.url))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    samples = realistic_samples(50)
    with make_reward_client(_client_config(secured.url)) as client:
        assert client.score_batch(samples) == LocalRewardClient("spatialthinker", "trigram").score_batch(samples)


def test_a_killed_scoring_process_is_replaced_and_the_client_retries(secured, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    samples = realistic_samples(200, seed=3)
    expected = LocalRewardClient("spatialthinker", "trigram").score_batch(samples)
    with make_reward_client(_client_config(secured.url, "reward_service.batch_size=50")) as client:
        victims = secured.scoring_pids()
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        # The pool learns of the death asynchronously (through the forkserver): until then the other process
        # answers; jobs the dead one held come back 503 and are retried; then a new pool takes over.
        deadline = time.monotonic() + 60
        while "a scoring process died" not in secured.log():
            assert client.score_batch(samples) == expected
            assert time.monotonic() < deadline, secured.log()
        assert client.score_batch(samples) == expected
    assert victims[0] not in secured.scoring_pids()


def test_graceful_shutdown_finishes_the_requests_in_flight(secured, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    samples = realistic_samples(3000, seed=4)
    expected = LocalRewardClient("spatialthinker", "trigram").score_batch(samples)
    workers = [psutil.Process(pid) for pid in secured.scoring_pids()]
    assert workers
    busy_before = sum(w.cpu_times().user for w in workers)
    answers = []
    # No retries: the answer must come from the server that is shutting down, not from a retry.
    with make_reward_client(
        _client_config(secured.url, "reward_service.retries=0", "reward_service.batch_size=3000")
    ) as client:
        sender = threading.Thread(target=lambda: answers.append(client.score_batch(samples)))
        sender.start()
        deadline = time.monotonic() + 60
        while sum(w.cpu_times().user for w in workers) - busy_before < 0.1 and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until the scoring processes are working on it
        secured.process.send_signal(signal.SIGTERM)
        sender.join(timeout=120)
    assert answers and answers[0] == expected
    assert secured.process.wait(timeout=90) == -signal.SIGTERM
    log = secured.log()
    assert "Waiting for background tasks to complete" in log or "Shutting down" in log
    assert "Application shutdown complete" in log and "Traceback" not in log
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_non_loopback_host_without_token_is_refused_before_binding():
    env = {k: v for k, v in os.environ.items() if k != "NEMO_SPATIAL_REWARD_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "nemo_spatial.reward.serve", "--host", "0.0.0.0", "--port", "5599"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "refusing to serve 0.0.0.0 without authentication: set $NEMO_SPATIAL_REWARD_TOKEN" in done.stderr


def test_unknown_config_key_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "nemo_spatial.reward.serve", "reward_service.server.prot=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "did you mean 'reward_service.server.port'" in done.stderr
