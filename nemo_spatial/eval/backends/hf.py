"""The hf backend: transformers `generate`, batched with left padding.

The model class is transformers' `AutoModelForImageTextToText` (Qwen2.5-VL resolves to
`Qwen2_5_VLForConditionalGeneration`, as upstream), bf16 on GPU and float32 on CPU (`--dtype` to choose),
sdpa attention (upstream: flash_attention_2, a kernel choice that does not change greedy outputs beyond
numerics). `do_sample=False`, `max_new_tokens`, the repetition penalty explicit (base.py). A batch that raises
is re-run one prompt at a time, so one bad sample is one error (upstream scores the whole batch wrong).
"""

from __future__ import annotations

import time
from typing import Any

from nemo_spatial.eval.backends.base import BackendOptions, Generated, repetition_penalty
from nemo_spatial.eval.backends.vllm import render
from nemo_spatial.eval.prompts import Prompt


class HfBackend:
    name = "hf"

    def __init__(self, options: BackendOptions) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.options = options
        self.penalty, source = repetition_penalty(options)
        cuda = torch.cuda.is_available()
        dtype = {
            "auto": torch.bfloat16 if cuda else torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float32": torch.float32,
        }[options.dtype]
        self.device = "cuda" if cuda else "cpu"
        self.processor = AutoProcessor.from_pretrained(options.model)
        self.processor.tokenizer.padding_side = "left"
        model: Any = AutoModelForImageTextToText.from_pretrained(options.model, dtype=dtype)
        self.model = model.to(self.device).eval()
        self.settings: dict[str, Any] = {
            "backend": "hf",
            "do_sample": False,
            "max_new_tokens": options.max_new_tokens,
            "repetition_penalty": self.penalty,
            "repetition_penalty_source": source,
            "dtype": str(dtype).removeprefix("torch."),
            "batch_size": options.batch_size,
            "padding_side": "left",
        }

    def generate(self, prompts: list[Prompt]) -> list[Generated]:
        results: list[Generated] = []
        for start in range(0, len(prompts), self.options.batch_size):
            chunk = prompts[start : start + self.options.batch_size]
            try:
                results.extend(self._batch(chunk))
            except Exception:  # noqa: BLE001 - find the prompt that fails, keep the others
                for prompt in chunk:
                    try:
                        results.extend(self._batch([prompt]))
                    except Exception as error:  # noqa: BLE001 - recorded as this sample's error
                        results.append(Generated(None, f"{type(error).__name__}: {error}"))
        return results

    def _batch(self, prompts: list[Prompt]) -> list[Generated]:
        import torch

        texts = [render(self.processor, p) for p in prompts]
        images = [image for p in prompts for image in p.images]
        started = time.perf_counter()
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=self.options.max_new_tokens,
                repetition_penalty=self.penalty,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        decoded = self.processor.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        latency = (time.perf_counter() - started) / len(prompts)
        return [Generated(text, None, latency) for text in decoded]

    def close(self) -> None:
        self.model = None
