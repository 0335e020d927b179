"""Startup checks of `python -m nemo_spatial.train` that depend on the number of trainer processes."""

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.train import check_restart_policy


def test_server_restart_needs_a_single_trainer_process(repo_root):
    cfg = load_config(repo_root / "conf/debug/tiny_cpu.yaml", ["generation.on_server_death=restart"])
    check_restart_policy(cfg, world_size=1)
    with pytest.raises(ConfigError, match="works with one trainer process, and this run has 2.*on_server_death=stop"):
        check_restart_policy(cfg, world_size=2)
    stopping = load_config(repo_root / "conf/debug/tiny_cpu.yaml", [])
    check_restart_policy(stopping, world_size=2)
