"""One source of truth: conf/base.yaml lists every schema key with the dataclass default; recipes are minimal diffs.

The dataclasses (each component's config.py) are the schema and hold the defaults; conf/base.yaml spells them out
with a comment per key. These tests fail when the two drift (a field added without its base.yaml line, a default
changed in one place only, a YAML key the schema lacks) and when a recipe repeats a value its base already has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from nemo_spatial.config import BASE_KEY, Config, _load_yaml_with_bases
from nemo_spatial.sft_config import SFTConfig, SFTRunConfig

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "conf" / "base.yaml"
RECIPES = sorted([*(ROOT / "conf" / "recipes").glob("*.yaml"), *(ROOT / "conf" / "debug").glob("*.yaml")])


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'generation.sampling.n': 8, ...}: every leaf of a nested mapping under its dotted key (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def schema_defaults() -> dict[str, Any]:
    return flatten(OmegaConf.to_container(OmegaConf.structured(Config)))


def yaml_leaves(path: Path) -> dict[str, Any]:
    loaded = OmegaConf.load(path)
    assert isinstance(loaded, DictConfig)
    loaded.pop(BASE_KEY, None)
    return flatten(OmegaConf.to_container(loaded))


def test_base_yaml_lists_every_schema_key_with_its_default() -> None:
    schema, base = schema_defaults(), yaml_leaves(BASE)
    missing = sorted(set(schema) - set(base))
    assert not missing, "conf/base.yaml lacks these schema keys (add one line each, with the default): " + ", ".join(
        f"{key}: {schema[key]!r}" for key in missing
    )
    unknown = sorted(set(base) - set(schema))
    assert not unknown, f"conf/base.yaml has keys no dataclass declares: {', '.join(unknown)}"
    different = {key: (base[key], schema[key]) for key in schema if base[key] != schema[key]}
    assert not different, "conf/base.yaml and the dataclass defaults differ (yaml, dataclass): " + ", ".join(
        f"{key}: {pair}" for key, pair in sorted(different.items())
    )


def test_sft_yaml_lists_every_sft_key_with_its_default() -> None:
    schema = flatten(OmegaConf.to_container(OmegaConf.structured(SFTConfig)), "sft.")
    listed = yaml_leaves(BASE.parent / "sft.yaml")
    assert listed == schema, f"conf/sft.yaml and SFTConfig differ: yaml {listed}, dataclass {schema}"


def test_base_yaml_types_match_the_schema() -> None:
    """`1` where the schema has a float would pass the value test; keep the YAML's spelling of the type too."""
    schema, base = schema_defaults(), yaml_leaves(BASE)
    wrong = {
        key: (type(base[key]).__name__, type(value).__name__)
        for key, value in schema.items()
        if value is not None and base.get(key) is not None and type(base[key]) is not type(value)
    }
    assert not wrong, f"conf/base.yaml spells these with another type (yaml, dataclass): {wrong}"


def _merged_bases(path: Path) -> dict[str, Any]:
    """The values a recipe's `_base_` files resolve to (on the schema defaults), before the recipe's own."""
    loaded = OmegaConf.load(path)
    assert isinstance(loaded, DictConfig)
    bases = loaded.get(BASE_KEY)
    names = [bases] if isinstance(bases, str) else list(bases or [])
    # A base may extend another one: resolve each the way load_config (or load_sft_config) does.
    bases_loaded = [_load_yaml_with_bases(path.parent / str(name)) for name in names]
    schema = SFTRunConfig if any("sft" in layer for layer in bases_loaded) else Config
    return flatten(OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), *bases_loaded)))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_recipe_is_a_minimal_diff_against_its_base(recipe: Path) -> None:
    own, base = yaml_leaves(recipe), _merged_bases(recipe)
    assert BASE_KEY in OmegaConf.load(recipe), f"{recipe.name} names no {BASE_KEY}: a recipe extends conf/base.yaml"
    repeated = sorted(key for key, value in own.items() if key in base and base[key] == value)
    assert not repeated, f"{recipe.name} repeats its base's value for: {', '.join(repeated)}; delete those lines"
    unknown = sorted(set(own) - set(base))
    assert not unknown, f"{recipe.name} sets keys the schema lacks: {', '.join(unknown)}"


def test_there_are_recipes_to_check() -> None:
    assert len(RECIPES) >= 5 and all(path.is_file() for path in RECIPES)


def test_config_error_is_imported_from_errors_only() -> None:
    """`nemo_spatial.errors` is the one home of ConfigError (config.py merely uses it)."""
    pattern = re.compile(r"from nemo_spatial\.(?!errors\b)[\w.]+ import [^\n]*\bConfigError\b")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("nemo_spatial", "tests", "benchmarks", "tools", "launcher")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert not offenders, f"import ConfigError from nemo_spatial.errors in: {', '.join(offenders)}"
