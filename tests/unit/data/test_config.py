"""data: config section: upstream defaults, validation with the fix in the message, YAML and overrides."""

from __future__ import annotations

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.data.config import DataConfig
from nemo_spatial.errors import ConfigError


def test_defaults_are_upstreams() -> None:
    cfg = DataConfig()
    assert (cfg.train_files, cfg.val_files) == ("hunarbatra/STVQA-7K@train", "hunarbatra/STVQA-7K@val")
    assert (cfg.prompt_key, cfg.answer_key, cfg.prompt_format) == ("problem", "answer_option_text", "spatialthinker")
    assert (cfg.min_pixels, cfg.max_pixels, cfg.max_prompt_length) == (262144, 4194304, 6144)


def test_base_yaml_matches_the_dataclass(repo_root) -> None:
    assert load_config(repo_root / "conf" / "base.yaml").data == DataConfig()


def test_overrides_reach_the_data_section(repo_root) -> None:
    cfg = load_config(
        repo_root / "conf" / "base.yaml",
        [
            "data.train_files=synthetic:64@train",
            "data.prompt_format=r1v",
            "data.prompt_key=question_with_options",
            "data.answer_key=answer_option_text_only",
        ],
    )
    assert cfg.data.train_files == "synthetic:64@train" and cfg.data.prompt_format == "r1v"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt_format": "llava"}, "data.prompt_format='llava' is not known; use one of: spatialthinker, r1v"),
        ({"overlong": "cut"}, "data.overlong='cut' is not known"),
        ({"prompt_format": "r1v"}, "set data.prompt_key=question_with_options and data.answer_key"),
        ({"min_pixels": 10, "max_pixels": 5}, "need 0 < min <= max"),
        ({"max_prompt_length": 0}, "data.max_prompt_length=0 must be > 0"),
        ({"num_workers": -1}, "data.num_workers=-1 must be >= 0"),
        ({"worker_start_method": "thread"}, "data.worker_start_method='thread' is not known"),
        ({"train_files": ""}, "data.train_files must not be empty"),
    ],
)
def test_invalid_values_name_the_key_and_the_fix(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DataConfig(**overrides)


def test_unknown_data_key_is_an_error(repo_root) -> None:
    with pytest.raises(ConfigError, match="did you mean 'data.max_pixels'"):
        load_config(repo_root / "conf" / "base.yaml", ["data.max_pixel=5"])
