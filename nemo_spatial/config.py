"""Typed configuration: dataclasses per component, YAML under conf/, `key=value` overrides.

    cfg = load_config("conf/base.yaml", ["reward.preset=r1v", "run.seed=3"])

A YAML file may name the files it extends with `_base_: other.yaml` (or a list, paths relative to the
file); they are merged first, so a recipe is a minimal diff against the base. Every key is checked against
the dataclasses: an unknown or misspelled key raises ConfigError naming the key and the nearest valid one,
a value of the wrong type names the key and the type, and each dataclass's `__post_init__` rejects invalid
values and combinations with a message that says what to change (naming the full key).

The dataclasses are the schema and hold the defaults; conf/base.yaml spells every key out with its default and
a comment, and tests/unit/test_config_sources.py fails when the two drift. Each section lives next to its
component: `run` here; `reward`, `reward_service` in reward/config.py; `data` in data/config.py; `algorithm` in
algorithms/config.py; `generation` in generation/config.py; `parallel` in parallel/config.py; `policy` in
models/qwen25_vl/config.py; `trainer` in trainer_config.py (beside trainer.py); `logging` in logging_sinks.py;
`launch` in launcher/config.py.
A new key is its dataclass field and one line in conf/base.yaml.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from nemo_spatial.algorithms.config import AlgorithmConfig
from nemo_spatial.data.config import DataConfig
from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.config import GenerationConfig
from nemo_spatial.launcher.config import LaunchConfig
from nemo_spatial.logging_sinks import LoggingConfig
from nemo_spatial.models.qwen25_vl.config import PolicyConfig
from nemo_spatial.parallel.config import ParallelConfig
from nemo_spatial.reward.config import RewardConfig, RewardServiceConfig
from nemo_spatial.trainer_config import TrainerConfig

BASE_KEY = "_base_"


@dataclass
class RunConfig:
    """Where a run writes and how it is seeded."""

    name: str = "debug"
    output_dir: str = "outputs"
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"run.name={self.name!r} must be a non-empty name without '/'")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_service: RewardServiceConfig = field(default_factory=RewardServiceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)  # SLURM placement (launcher/submit.py only)
    upstream_exact: bool = False  # every upstream-exact switch at once (nemo_spatial/upstream.py)

    def __post_init__(self) -> None:
        """Checks that span components (each component checks its own values)."""
        from nemo_spatial.upstream import apply_upstream_exact

        apply_upstream_exact(self)
        per_update = self.trainer.prompts_per_update * self.generation.sampling.n
        if per_update % self.policy.micro_batch_size:
            raise ConfigError(
                f"an optimizer step takes trainer.prompts_per_update x generation.sampling.n = {per_update} "
                f"sequences, which policy.micro_batch_size={self.policy.micro_batch_size} does not divide; "
                "choose a micro-batch size that divides it"
            )
        if self.trainer.async_rollouts and self.generation.placement != "apart":
            raise ConfigError(
                f"trainer.async_rollouts={self.trainer.async_rollouts} overlaps generation with training, which "
                f"needs generation GPUs of their own, but generation.placement={self.generation.placement!r} "
                "shares the trainer's (vLLM sleeps while the policy trains): set generation.placement=apart, "
                "or trainer.async_rollouts=0"
            )
        if self.policy.offload_during_generation and self.generation.placement != "colocated":
            raise ConfigError(
                "policy.offload_during_generation=true frees the trainer's GPU memory for a colocated vLLM, but "
                f"generation.placement={self.generation.placement!r} gives the servers GPUs of their own (nothing "
                "would use that memory, and every step would pay the copies): remove the key (null: on when "
                "colocated) or set generation.placement=colocated"
            )

    @property
    def offloads_during_generation(self) -> bool:
        """Whether the trainer offloads the policy's optimizer state and grads while the engines generate."""
        colocated = self.generation.placement == "colocated"
        return colocated and self.policy.offload_during_generation is not False

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """The Config from defaults, then the YAML file (with its bases), then `key=value` overrides."""
    layers = [_load_yaml_with_bases(Path(path))] if path is not None else []
    layers.append(_parse_overrides(overrides or []))
    return build(Config, layers)


def build[T](schema: type[T], layers: list[DictConfig]) -> T:
    """Merge `layers` onto the dataclass `schema` and instantiate it, with actionable errors."""
    merged: DictConfig = OmegaConf.structured(schema)
    for layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)  # type: ignore[assignment]
        except (ConfigKeyError, ConfigAttributeError) as error:
            raise ConfigError(_unknown_key_message(schema, error)) from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"config key {error.full_key!r}: {error.msg}") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"config key {error.full_key!r}: {error.msg}") from None


def _unknown_key_message(schema: type, error: OmegaConfBaseException) -> str:
    key = error.full_key or str(error.key)
    valid = valid_keys(schema)
    nearest = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else f"; valid keys: {', '.join(valid)}"
    return f"unknown config key {key!r}{hint}"


def valid_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema, e.g. 'reward.preset'."""
    keys: list[str] = []
    # The declared types, not the default factories (a factory need not be the class itself).
    hints = get_type_hints(schema)
    for f in fields(schema):  # type: ignore[arg-type]
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        sub = hints.get(f.name)
        if isinstance(sub, type) and is_dataclass(sub):
            keys.extend(valid_keys(sub, f"{dotted}."))
    return keys


def _load_yaml_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path in seen:
        raise ConfigError(f"config file {path} extends itself through {BASE_KEY}")
    loaded = OmegaConf.load(path)
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    bases = loaded.pop(BASE_KEY, None)
    base_paths = [bases] if isinstance(bases, str) else list(bases or [])
    for base in base_paths:  # named here: the error inside would only name the missing file
        if not (path.parent / str(base)).is_file():
            raise ConfigError(
                f"config file {path} names {BASE_KEY}: {base}, and {(path.parent / str(base)).resolve()} does not "
                f"exist; {BASE_KEY} paths are relative to the file that names them"
            )
    layers = [_load_yaml_with_bases(path.parent / str(base), (*seen, path)) for base in base_paths]
    return OmegaConf.merge(*layers, loaded) if layers else loaded  # type: ignore[return-value]


def _parse_overrides(overrides: list[str]) -> DictConfig:
    """`key=value` items; `key=` is the empty string (OmegaConf would read None; write `key=null` for that)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key=value, e.g. reward.preset=r1v")
    return OmegaConf.from_dotlist([item + '""' if item.endswith("=") else item for item in overrides])


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def write_run_metadata(cfg: Config, run_dir: Path | None = None) -> Path:
    """Write the resolved config and the code revision next to a run's outputs; returns the directory."""
    run_dir = run_dir or cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    info = {"git": git_revision(), "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (run_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return run_dir


def git_revision() -> str:
    """`<commit>` or `<commit>-dirty` of the source tree this package runs from; 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
