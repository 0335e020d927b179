"""Typed configuration: YAML + overrides onto dataclasses, with errors that say what to change."""

import json

import pytest

from nemo_spatial.config import Config, load_config, valid_keys, write_run_metadata
from nemo_spatial.errors import ConfigError


def test_defaults_and_overrides(repo_root):
    cfg = load_config(repo_root / "conf/base.yaml", ["reward.preset=r1v", "run.seed=3"])
    assert isinstance(cfg, Config)
    assert (cfg.reward.preset, cfg.run.seed, cfg.reward.similarity) == ("r1v", 3, "auto")


def test_misspelled_key_names_the_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'reward.presett'; did you mean 'reward.preset'\?"):
        load_config(None, ["reward.presett=r1v"])
    with pytest.raises(ConfigError, match=r"did you mean 'run.seed'"):
        load_config(None, ["run.sed=1"])


def test_unknown_section_lists_the_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainr:\n  total_steps: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'trainr'; did you mean 'trainer'"):
        load_config(path)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="run.seed"):
        load_config(None, ["run.seed=abc"])


def test_invalid_values_say_what_to_use():
    with pytest.raises(
        ConfigError, match="reward.preset='spatial' is not a preset; use one of: spatialthinker, r1v, letter_a"
    ):
        load_config(None, ["reward.preset=spatial"])
    with pytest.raises(ConfigError, match="reward.similarity='glove'"):
        load_config(None, ["reward.similarity=glove"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["reward.preset"])


def test_recipes_extend_their_base(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  seed: 5\nreward:\n  preset: r1v\n")
    (tmp_path / "recipe.yaml").write_text("_base_: base.yaml\nrun:\n  name: recipe\n")
    cfg = load_config(tmp_path / "recipe.yaml")
    assert (cfg.run.name, cfg.run.seed, cfg.reward.preset) == ("recipe", 5, "r1v")
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_run_metadata_has_the_resolved_config_and_revision(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=r1"])
    run_dir = write_run_metadata(cfg)
    assert run_dir == tmp_path / "r1"
    reloaded = load_config(run_dir / "config.yaml")
    assert reloaded == cfg
    git = json.loads((run_dir / "run_info.json").read_text())["git"]
    assert git == "unknown" or len(git.split("-")[0]) == 40


def test_valid_keys_lists_nested_keys():
    assert {"run.seed", "reward.preset", "reward.similarity"} <= set(valid_keys(Config))
    # A section whose default comes from a lambda is listed too, so a typo in it gets the right hint.
    assert "generation.val_sampling.temperature" in valid_keys(Config)


def test_typo_in_a_lambda_built_section_gets_its_own_key(repo_root):
    with pytest.raises(ConfigError, match=r"did you mean 'generation.val_sampling.temperature'\?"):
        load_config(repo_root / "conf/debug/tiny_cpu.yaml", ["generation.val_sampling.temprature=0.3"])


def test_an_empty_override_is_the_empty_string():
    assert load_config(None, ["run.output_dir="]).run.output_dir == ""


def test_cross_component_combinations_fail_at_load_time_with_the_fix():
    with pytest.raises(
        ConfigError, match=r"prompts_per_update x generation.sampling.n = 8 sequences.*micro_batch_size=16"
    ):
        load_config(None, ["trainer.prompts_per_update=1", "generation.sampling.n=8", "policy.micro_batch_size=16"])
