"""`trainer.export_hf_every`: off by default in the base config, and a negative value is refused by name."""

from __future__ import annotations

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError
from nemo_spatial.trainer_config import TrainerConfig


def test_export_hf_every_defaults_to_off_and_takes_an_override(repo_root):
    assert load_config(repo_root / "conf" / "base.yaml").trainer.export_hf_every == 0
    assert load_config(repo_root / "conf" / "base.yaml", ["trainer.export_hf_every=5"]).trainer.export_hf_every == 5


def test_a_negative_interval_names_the_key():
    with pytest.raises(ConfigError, match=r"trainer.export_hf_every=-1 must be >= 0 \(0 turns it off\)"):
        TrainerConfig(export_hf_every=-1)
