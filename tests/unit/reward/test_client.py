"""The trainer's reward client: in-process at wire precision, and failing fast where no server answers."""

import time

import numpy as np
import pytest

from nemo_spatial.config import load_config
from nemo_spatial.net import free_port
from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.client import LocalRewardClient, RewardServiceError, make_reward_client
from nemo_spatial.reward.examples import worked_samples

SAMPLES = list(worked_samples().values())


def test_local_client_is_the_scorer_at_float32_precision():
    client = make_reward_client(load_config(None, ["reward.similarity=trigram"]))
    assert isinstance(client, LocalRewardClient)
    batch = client.score_batch(SAMPLES)
    reference = RewardScorer("spatialthinker", "trigram").score_batch(SAMPLES)
    for got, want in zip(batch.results, reference.results, strict=True):
        for name, value in want.components().items():
            assert getattr(got, name) == float(np.float32(value))
    assert batch.results[1].spatial != reference.results[1].spatial  # 0.8736 is not a float32: rounding happened


def test_unsendable_samples_get_the_same_per_sample_error_in_both_clients():
    samples = [SAMPLES[0], RewardSample(7, "gt", "p"), RewardSample("lone \ud800 surrogate", "gt", "p"), SAMPLES[0]]
    batch = LocalRewardClient("spatialthinker", "trigram").score_batch(samples)
    assert batch.n_errors == 2 and batch.results[0] == batch.results[3] and batch.results[0].error is None
    assert batch.results[1].error == "TypeError: response must be a string, got int"
    assert batch.results[2].error.startswith("UnicodeEncodeError: response is not valid Unicode text")
    assert batch.first_errors[0].startswith("sample 1: TypeError")


def test_unreachable_server_fails_fast_naming_host_and_port():
    port = free_port()
    cfg = load_config(
        None, ["reward_service.mode=remote", f"reward_service.url=http://127.0.0.1:{port}", "reward.similarity=trigram"]
    )
    start = time.monotonic()
    with pytest.raises(RewardServiceError) as caught:
        make_reward_client(cfg)
    assert time.monotonic() - start < 2.0
    message = str(caught.value)
    assert f"127.0.0.1:{port} is unreachable (connection refused)" in message
    assert "reward_service.mode=local" in message and f"--port {port}" in message
