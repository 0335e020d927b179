"""The vllm backend: an in-process engine (`generation.offline`), or a running vLLM server at `--url`.

In-process: prompts are rendered with the model's own chat template (transformers' AutoProcessor, as hf and
training do), images resized to the template's pixel bounds beforehand (prompts.py), and all of a chunk go to
the engine at once. Greedy: temperature 0, the repetition penalty made explicit (base.py).
With `--url` the server's OpenAI-compatible `/v1/chat/completions` API is called (vLLM's `vllm serve`):
images as PNG data URLs, `repetition_penalty` in the request body (vLLM's extension), the same retries and
bounded concurrency as the openai backend.
"""

from __future__ import annotations

from typing import Any

from nemo_spatial.eval.backends.base import BackendOptions, Generated, repetition_penalty
from nemo_spatial.eval.prompts import Prompt


class VllmBackend:
    name = "vllm"

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        penalty, source = repetition_penalty(options)
        self.penalty = penalty
        self.settings: dict[str, Any] = {
            "backend": "vllm",
            "temperature": 0.0,
            "max_new_tokens": options.max_new_tokens,
            "repetition_penalty": penalty,
            "repetition_penalty_source": source,
        }
        self._remote: Any = None
        if options.url:
            from nemo_spatial.eval.backends.api import OpenAIBackend

            self._remote = OpenAIBackend(options, base_url=options.url, extra_body={"repetition_penalty": penalty})
            self.settings.update(url=options.url, **{k: v for k, v in self._remote.settings.items() if k != "backend"})
            return
        from transformers import AutoProcessor

        from nemo_spatial.generation.offline import DecodeSettings, OfflineChatEngine

        self.processor = AutoProcessor.from_pretrained(options.model)
        self.decode = DecodeSettings(max_tokens=options.max_new_tokens, temperature=0.0, repetition_penalty=penalty)
        self.engine = OfflineChatEngine(
            options.model,
            dtype=options.dtype,
            max_model_len=options.max_model_len,
            max_num_seqs=options.batch_size,
            max_images=options.max_images,
            kv_cache_gb=options.kv_cache_gb,
            enforce_eager=options.enforce_eager,
            tensor_parallel_size=options.tensor_parallel_size,
        )
        self.settings.update(dtype=options.dtype, max_model_len=options.max_model_len, max_num_seqs=options.batch_size)

    def generate(self, prompts: list[Prompt]) -> list[Generated]:
        if self._remote is not None:
            return self._remote.generate(prompts)  # type: ignore[no-any-return]
        from nemo_spatial.generation.offline import ChatRequest

        requests = [ChatRequest(render(self.processor, p), p.images) for p in prompts]
        outputs = self.engine.generate(requests, self.decode)
        return [
            Generated(o.text, o.error, o.latency_s, {"output_tokens": o.output_tokens, "finish": o.finish_reason})
            for o in outputs
        ]

    def close(self) -> None:
        if self._remote is None:
            self.engine.close()


def render(processor: Any, prompt: Prompt) -> str:
    """The chat template's text for one user turn with this prompt's images then text, generation prompt on."""
    messages = [{"role": "user", "content": prompt.content()}]
    return str(processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
