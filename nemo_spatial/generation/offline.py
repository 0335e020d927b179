"""Batched multimodal chat generation with an in-process `vllm.LLM` engine, for evaluation.

Takes prompts already rendered by the model's chat template (one `<|vision_start|><|image_pad|><|vision_end|>`
per image) and their PIL images, and returns the decoded text of one greedy completion each, with the time
from submission to finish. Unlike `InProcessGenerator` (training rollouts: token ids, log-probs, weight sync)
it has no worker extension and no weight transfer; it detokenizes, and records per-request latency.
Requests are added one by one so that one bad prompt (too long, image mismatch) becomes that request's
error instead of failing the batch; all requests then run together in vLLM's continuous batching.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)
CPU_KV_CACHE_GB = 2.0


@dataclass
class ChatRequest:
    prompt: str  # rendered by the chat template, one image placeholder per image
    images: list[Image.Image]


@dataclass
class ChatCompletion:
    text: str | None
    error: str | None
    latency_s: float
    output_tokens: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class DecodeSettings:
    """Greedy decoding, every value explicit (nothing inherited silently from the checkpoint)."""

    max_tokens: int = 2048
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0


class OfflineChatEngine:
    """A `vllm.LLM` for batched greedy chat generation; `close()` shuts the engine down."""

    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 16384,
        max_num_seqs: int = 64,
        max_images: int = 4,
        kv_cache_gb: float | None = None,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
    ) -> None:
        import torch
        from vllm import LLM

        gb = kv_cache_gb if kv_cache_gb is not None else (0.0 if torch.cuda.is_available() else CPU_KV_CACHE_GB)
        kwargs: dict[str, Any] = {"kv_cache_memory_bytes": int(gb * 1024**3)} if gb else {}
        self.llm = LLM(
            model=model_dir,
            dtype=dtype,  # type: ignore[arg-type]
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            limit_mm_per_prompt={"image": max_images},
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            seed=seed,
            **kwargs,
        )
        self.engine = self.llm.llm_engine

    def generate(self, requests: list[ChatRequest], settings: DecodeSettings) -> list[ChatCompletion]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            n=1,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            repetition_penalty=settings.repetition_penalty,
            seed=settings.seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        batch = uuid.uuid4().hex[:12]
        results: dict[int, ChatCompletion] = {}
        pending: dict[str, tuple[int, float]] = {}
        for index, request in enumerate(requests):
            prompt: dict[str, Any] = {"prompt": request.prompt}
            if request.images:
                prompt["multi_modal_data"] = {"image": list(request.images)}
            request_id = f"eval-{batch}-{index}"
            try:
                self.engine.add_request(request_id, prompt, params)  # type: ignore[arg-type]
                pending[request_id] = (index, time.perf_counter())
            except Exception as error:  # noqa: BLE001 - vLLM raises many types for one bad prompt
                results[index] = ChatCompletion(None, f"{type(error).__name__}: {error}", 0.0)
        while self.engine.has_unfinished_requests():
            for output in self.engine.step():
                if output.finished and output.request_id in pending:
                    index, started = pending.pop(output.request_id)
                    completion = output.outputs[0]  # type: ignore[index]
                    results[index] = ChatCompletion(
                        completion.text,
                        None,
                        time.perf_counter() - started,
                        len(completion.token_ids),
                        str(completion.finish_reason),
                    )
        for index, _ in pending.values():
            results[index] = ChatCompletion(None, "the engine returned no output", 0.0)
        return [results[i] for i in range(len(requests))]

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.engine_core.shutdown()
            self.engine = None  # type: ignore[assignment]
