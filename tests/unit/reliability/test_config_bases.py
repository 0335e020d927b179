"""A missing `_base_` names the YAML that referenced it."""

from pathlib import Path

import pytest

from nemo_spatial.config import load_config
from nemo_spatial.errors import ConfigError


def test_a_missing_base_names_the_file_that_names_it(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "mine.yaml"
    recipe.parent.mkdir()
    recipe.write_text("_base_: ../bsae.yaml\nrun:\n  name: x\n")
    with pytest.raises(ConfigError, match=f"config file {recipe} names _base_: ../bsae.yaml, and "
                       f"{tmp_path / 'bsae.yaml'} does not exist"):  # fmt: skip
        load_config(recipe)
