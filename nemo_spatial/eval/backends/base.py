"""The backend interface, the options every backend reads, and what local models inherit implicitly.

`Backend.generate(prompts)` returns one `Generated` per prompt, in order: the response text, or an `error`
(the runner records it for that sample and does not score it). `settings` is everything that decides the
output (recorded in config.json).

Generation settings of local models (vllm, hf): greedy (temperature 0), `max_new_tokens` 2048 (upstream), and
the repetition penalty that upstream's `model.generate` inherits from the checkpoint's generation_config.json
(Qwen2.5-VL-Instruct ships 1.05), read here and passed explicitly; `--repetition-penalty` overrides it. Top-p /
top-k of that file do not matter under greedy decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nemo_spatial.errors import UserError
from nemo_spatial.eval.prompts import Prompt

BACKENDS = ("vllm", "hf", "openai", "anthropic", "replay")


@dataclass
class Generated:
    text: str | None
    error: str | None = None
    latency_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendOptions:
    model: str
    max_new_tokens: int = 2048
    repetition_penalty: float | None = None  # None: the checkpoint's generation_config (1.0 without one)
    batch_size: int = 16
    concurrency: int = 8
    max_retries: int = 6
    url: str | None = None
    dtype: str = "auto"
    max_model_len: int = 16384
    max_images: int = 4
    kv_cache_gb: float | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    request_timeout_s: float = 600.0


class Backend(Protocol):
    name: str
    settings: dict[str, Any]

    def generate(self, prompts: list[Prompt]) -> list[Generated]: ...

    def close(self) -> None: ...


def checkpoint_generation_config(model_dir: str) -> dict[str, Any]:
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); fix or remove it") from None
    return loaded if isinstance(loaded, dict) else {}


def repetition_penalty(options: BackendOptions) -> tuple[float, str]:
    """The penalty to use and where it came from (recorded)."""
    if options.repetition_penalty is not None:
        return options.repetition_penalty, "--repetition-penalty"
    value = checkpoint_generation_config(options.model).get("repetition_penalty")
    if isinstance(value, (int, float)):
        return float(value), f"{options.model}/generation_config.json"
    return 1.0, "default (the checkpoint's generation_config has none)"


def build_backend(name: str, options: BackendOptions) -> Backend:
    if name == "vllm":
        from nemo_spatial.eval.backends.vllm import VllmBackend

        return VllmBackend(options)
    if name == "hf":
        from nemo_spatial.eval.backends.hf import HfBackend

        return HfBackend(options)
    if name in ("openai", "anthropic"):
        from nemo_spatial.eval.backends.api import AnthropicBackend, OpenAIBackend

        return OpenAIBackend(options) if name == "openai" else AnthropicBackend(options)
    raise UserError(f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}")
