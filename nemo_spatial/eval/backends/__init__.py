"""Model backends: vllm (default), hf, openai, anthropic. Replay needs no backend (runner.py)."""

from __future__ import annotations

from nemo_spatial.eval.backends.base import Backend, BackendOptions, Generated, build_backend

__all__ = ["Backend", "BackendOptions", "Generated", "build_backend"]
