"""One real generation server (vLLM CPU build, float32, tiny Qwen2.5-VL) per test session, and the trainer model.

The "trainer model" is the transformers Qwen2.5-VL loaded from the same checkpoint: the tests perturb its
weights, push them through the real sync path, and compare vLLM's log-probs with its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nemo_spatial.generation import GenerationConfig, SamplingConfig
from nemo_spatial.generation.types import IMAGE_PLACEHOLDER

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
CONTINUATION = "There are two cars left of the tree."


def chat_prompt(question: str, n_images: int = 1) -> str:
    """The Qwen2.5-VL chat template's rendering of one user turn (what the data pipeline sends)."""
    return f"{SYSTEM}<|im_start|>user\n{IMAGE_PLACEHOLDER * n_images}{question}<|im_end|>\n<|im_start|>assistant\n"


def make_image(seed: int, size: tuple[int, int] = (84, 112)) -> Image.Image:
    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    return Image.fromarray(pixels)


def e2e_config(**overrides) -> GenerationConfig:
    settings = {
        "dtype": "float32",  # exact parity on CPU (stack notes); bf16 is the production dtype
        "max_model_len": 1024,
        "max_num_seqs": 16,
        "kv_cache_gb": 0.25,
        "enforce_eager": True,  # start fast; these tests check values, not speed
        "bucket_mb": 1,  # several buckets even for the 4.4 MB tiny model, so layers split across buckets
        "startup_timeout_s": 900.0,
        "request_timeout_s": 600.0,
        "on_server_death": "restart",
        "max_restarts": 1,
        "sampling": SamplingConfig(n=4, max_tokens=12),
    }
    settings.update(overrides)
    return GenerationConfig(**settings)


class TrainerModel:
    """transformers' Qwen2.5-VL as the trainer's policy: weights to push, log-probs to compare against."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.original = {name: t.clone() for name, t in self.model.state_dict().items()}
        vocab = self.processor.tokenizer.get_vocab()
        self.vision_ids = [vocab[t] for t in ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>")]
        self.vision_ids.append(vocab["<|video_pad|>"])

    def named_hf_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor), as the Megatron policy's export yields them."""
        yield from self.model.state_dict().items()

    def perturb(self, seed: int, scale: float = 0.02) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * scale)

    def restore(self) -> None:
        self.model.load_state_dict(self.original)

    def inputs(self, text: str, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        return dict(self.processor(text=[text], images=images or None, return_tensors="pt"))

    @staticmethod
    def extend(inputs: dict[str, torch.Tensor], token_ids: list[int]) -> dict[str, torch.Tensor]:
        """The processor's inputs with generated text tokens appended (ids, mask, modality types)."""
        length = inputs["input_ids"].shape[1]
        extended = dict(inputs)
        extended["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([token_ids])], dim=1)
        for key in ("attention_mask", "mm_token_type_ids", "token_type_ids"):
            if key in inputs and inputs[key].shape[-1] == length:
                fill = torch.ones if key == "attention_mask" else torch.zeros
                extended[key] = torch.cat([inputs[key], fill((1, len(token_ids)), dtype=inputs[key].dtype)], dim=1)
        return extended

    def token_log_probs(self, inputs: dict[str, torch.Tensor], start: int, mask_vision: bool = False) -> torch.Tensor:
        """log p(ids[t] | ids[:t]) for t >= start, in float32 (optionally with vision tokens forbidden)."""
        with torch.no_grad():
            logits = self.model(**inputs).logits[0].float()
        if mask_vision:
            logits[:, self.vision_ids] = float("-inf")
        log_probs = torch.log_softmax(logits, dim=-1)
        ids = inputs["input_ids"][0]
        return log_probs[start - 1 : -1].gather(-1, ids[start:, None])[:, 0]


@pytest.fixture(scope="session")
def trainer_model(tiny_model_dir: Path) -> TrainerModel:
    return TrainerModel(tiny_model_dir)


@pytest.fixture(scope="session")
def vllm_cache_env(session_vllm_cache: Path) -> dict[str, str]:
    """The session's vLLM cache (tests/conftest.py), for a server or engine given its environment explicitly."""
    return {"VLLM_CACHE_ROOT": str(session_vllm_cache)}


@pytest.fixture(scope="session")
def generation_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, vllm_cache_env):
    """The session's server: `python -m nemo_spatial.generation.serve` on 127.0.0.1, spawned and owned here."""
    from nemo_spatial.generation.client import ServerGenerator

    log_dir = tmp_path_factory.mktemp("generation-server")
    generator = ServerGenerator.launch(e2e_config(), str(tiny_model_dir), log_dir, env=vllm_cache_env)
    yield generator
    generator.close()
