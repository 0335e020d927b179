"""reward_service config: defaults in conf/base.yaml, validation that names the key and the fix."""

from dataclasses import asdict

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.reward.config import RewardServiceConfig, is_loopback_host, parse_url


def test_base_yaml_holds_the_dataclass_defaults(repo_root):
    assert asdict(load_config(repo_root / "conf/base.yaml").reward_service) == asdict(RewardServiceConfig())


def test_overrides_reach_the_nested_server_config():
    cfg = load_config(None, ["reward_service.mode=remote", "reward_service.server.port=6000"])
    assert (cfg.reward_service.mode, cfg.reward_service.server.port) == ("remote", 6000)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reward_service.mode=cloud", "reward_service.mode='cloud' is not a mode; use one of: local, remote"),
        ("reward_service.url=127.0.0.1:5555", "must look like http://HOST:PORT"),
        ("reward_service.url=http://h:99999", "is not a URL"),
        ("reward_service.url=http://h:1/v2", "must not have a path"),
        ("reward_service.timeout_s=0", "reward_service.timeout_s=0.0 must be > 0"),
        ("reward_service.retries=-1", "reward_service.retries=-1 must be in [0, 20]"),
        ("reward_service.batch_size=0", "reward_service.batch_size=0 must be >= 1"),
        ("reward_service.server.port=0", "reward_service.server.port=0 must be a TCP port"),
        ("reward_service.server.workers=-2", "must be >= 0 (0 = one per core)"),
        ("reward_service.server.max_request_mb=0", "max_request_mb=0.0 must be in (0, 4096]"),
        ("reward_service.sever.port=1", "did you mean 'reward_service.server'"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert message in str(caught.value)


def test_url_parts_and_loopback_hosts():
    assert parse_url("http://127.0.0.1:5555") == ("http", "127.0.0.1", 5555)
    assert parse_url("https://rewards.internal/") == ("https", "rewards.internal", 443)
    assert all(map(is_loopback_host, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback_host, ["0.0.0.0", "10.1.2.3", "rewards.internal"]))
