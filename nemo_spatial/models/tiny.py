"""A tiny random-weight Qwen2.5-VL checkpoint in Hugging Face format, built offline and deterministically.

    python -m nemo_spatial.models.tiny --out /tmp/tiny-qwen25vl [--seed 0]
    build_tiny_qwen25_vl(out_dir, seed=0) -> Path

What it writes: `config.json`, `generation_config.json`, `model.safetensors` (float32, 57 tensors),
a Qwen2 tokenizer (`tokenizer.json`, `tokenizer_config.json`), and the Qwen2.5-VL processor
(`preprocessor_config.json`, `video_preprocessor_config.json`, the chat template) - the same files a
downloaded `Qwen/Qwen2.5-VL-3B-Instruct` has, so every component loads both from a local path the same way.

Shape (TINY below): text hidden 128, 2 layers, 2 attention heads x head dim 64 (vLLM's CPU attention needs
head dim >= 32), 2 KV heads (so TP=2 divides the query groups), mRoPE section [8, 12, 12] (sums to
head_dim / 2), vision depth 2 with hidden 64, vocabulary 2,048 (see tiny_tokenizer.py). The vision tower
keeps Qwen2.5-VL's patch 14, temporal patch 2 and spatial merge 2, so one LLM image token covers 28x28 pixels
as in the real model. Weights are random (Qwen's own initialiser under `torch.manual_seed(seed)`): the same
seed gives byte-identical files. The model is meant for wiring and parity tests, not for answers.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_spatial.models.tiny_tokenizer import NON_SPECIAL, SPECIAL_TOKENS, build_tokenizer

# Qwen2.5-VL-Instruct's chat template (system prompt by default; images/videos as vision blocks).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The real checkpoints' CLIP normalisation and pixel bounds (preprocessor_config.json of Qwen2.5-VL-*-Instruct).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
PROCESSOR_MIN_PIXELS = 3136
PROCESSOR_MAX_PIXELS = 12845056


@dataclass(frozen=True)
class TinyShape:
    """The numbers of the tiny model (kept in one place so tests and docs quote the same values)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    head_dim: int = 64
    mrope_section: tuple[int, int, int] = (8, 12, 12)
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_num_heads: int = 2
    vision_fullatt_block_indexes: tuple[int, ...] = (1,)
    vision_window_size: int = 112


TINY = TinyShape()


def build_tiny_qwen25_vl(out_dir: str | Path, seed: int = 0, shape: TinyShape = TINY) -> Path:
    """Write the tiny checkpoint into `out_dir` (created if needed) and return its path."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    if sum(shape.mrope_section) * 2 != shape.head_dim:
        raise ValueError(f"mrope_section {shape.mrope_section} must sum to head_dim/2 = {shape.head_dim // 2}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _hf_tokenizer(shape.vocab_size)
    config = _config(shape, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).float().eval()
    model.generation_config.update(**_generation_defaults(tokenizer))
    model.save_pretrained(out, safe_serialization=True)
    _processor(tokenizer).save_pretrained(out)
    return out


def _hf_tokenizer(vocab_size: int) -> Any:
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    raw = build_tokenizer(vocab_size)
    raw.add_special_tokens([AddedToken(t, special=t not in NON_SPECIAL, normalized=False) for t in SPECIAL_TOKENS])
    if raw.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tiny tokenizer has {raw.get_vocab_size()} tokens, expected {vocab_size}")
    kwargs: dict[str, Any] = {"unk_token": None, "bos_token": None}  # Qwen has neither
    return Qwen2Tokenizer(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=TINY.max_position_embeddings,
        chat_template=CHAT_TEMPLATE,
        **kwargs,
    )


def _config(shape: TinyShape, tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    text = {
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "max_position_embeddings": shape.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": list(shape.mrope_section),
            "rope_theta": shape.rope_theta,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision = {
        "depth": shape.vision_depth,
        "hidden_size": shape.vision_hidden_size,
        "intermediate_size": shape.vision_intermediate_size,
        "num_heads": shape.vision_num_heads,
        "out_hidden_size": shape.hidden_size,
        "fullatt_block_indexes": list(shape.vision_fullatt_block_indexes),
        "window_size": shape.vision_window_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )
    if shape.hidden_size // shape.num_attention_heads != shape.head_dim:
        raise ValueError(f"hidden {shape.hidden_size} / heads {shape.num_attention_heads} != head_dim {shape.head_dim}")
    return config


def _generation_defaults(tokenizer: Any) -> dict[str, Any]:
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return {"bos_token_id": eos[1], "eos_token_id": eos, "pad_token_id": eos[1], "do_sample": False}


def _processor(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixel_kwargs = {
        "min_pixels": PROCESSOR_MIN_PIXELS,
        "max_pixels": PROCESSOR_MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
    }
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixel_kwargs),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixel_kwargs),
        chat_template=CHAT_TEMPLATE,
    )


def describe(model_dir: str | Path) -> dict[str, Any]:
    """The key numbers of a checkpoint's config.json (for logs and the CLI)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    text = config.get("text_config", config)
    return {
        "vocab_size": text["vocab_size"],
        "hidden_size": text["hidden_size"],
        "layers": text["num_hidden_layers"],
        "heads": text["num_attention_heads"],
        "kv_heads": text["num_key_value_heads"],
        "mrope_section": (text.get("rope_parameters") or text.get("rope_scaling") or {}).get("mrope_section"),
        "vision_depth": config["vision_config"]["depth"],
        "image_token_id": config["image_token_id"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tiny random-weight Qwen2.5-VL checkpoint (offline).")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed; the same seed gives identical files")
    args = parser.parse_args(argv)
    out = build_tiny_qwen25_vl(args.out, seed=args.seed)
    print(f"wrote {out}: {json.dumps(describe(out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
