"""`--check`: the exported directory in transformers against the checkpoint in Megatron, on the same inputs.

    report = check_export(out_dir, chunks, dtype)    # collective over the export's TP ranks; report on rank 0

Inputs: one synthetic scene image (nemo_spatial.data.synth, 112 x 84 pixels: a few image tokens) and its
question in the training format (SpatialThinker's `problem` text, Qwen's chat template from the export's
processor, generation prompt appended). Both models get the same token ids, pixel values and image grid.

What is compared: the logits at every prompt position (max |difference|), and each model's greedy
continuation (NEW_TOKENS tokens, stopping at an end-of-sequence id). transformers loads the export as a user
would, in its own dtype; Megatron computes in float32 with its weights first rounded to the export dtype,
so the figure measures the conversion and the reduced-precision compute, not the rounding of the weights.
Tolerance (TOLERANCE): float32 1e-3 absolute (two implementations of the same float32 maths; measured
~1e-5 on the tiny model); bfloat16 and float16: 5e-2 x max(1, max |logit|), bf16 keeps 8 bits of mantissa
(relative rounding 2^-9 per operation, accumulated over the layers). The check fails above it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_spatial.export.files import torch_dtype

NEW_TOKENS = 8
TOLERANCE = {"float32": (1e-3, False), "bfloat16": (5e-2, True), "float16": (5e-2, True)}  # (value, relative)
CHECK_IMAGE_SIZE = (112, 84)


@dataclass(frozen=True)
class CheckReport:
    dtype: str
    max_abs_logit_diff: float
    tolerance: float
    prompt_tokens: int
    hf_continuation: str
    megatron_continuation: str

    @property
    def passed(self) -> bool:
        return self.max_abs_logit_diff <= self.tolerance

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"check {verdict}: max |logit diff| = {self.max_abs_logit_diff:.3g} over {self.prompt_tokens} prompt "
            f"tokens (tolerance {self.tolerance:.3g} for {self.dtype})\n"
            f"  transformers greedy: {self.hf_continuation!r}\n"
            f"  megatron greedy:     {self.megatron_continuation!r}"
        )


def tolerance(dtype: str, reference_logits: torch.Tensor) -> float:
    value, relative = TOLERANCE[dtype]
    return value * max(1.0, float(reference_logits.abs().max())) if relative else value


def check_inputs(model_dir: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """(processor, encoded inputs) for one synthetic image and its question in the training prompt format."""
    from PIL import Image
    from transformers import AutoProcessor

    from nemo_spatial.data.prompts import chat_messages, question_with_options, spatialthinker_problem
    from nemo_spatial.data.synth import make_question

    processor = AutoProcessor.from_pretrained(str(model_dir))
    scene, question, _ = make_question(0, "val", 0)
    buffer = io.BytesIO()
    scene.render().resize(CHECK_IMAGE_SIZE).save(buffer, format="PNG")
    image = Image.open(buffer).convert("RGB")
    problem = spatialthinker_problem(question_with_options(question.text, question.options), *CHECK_IMAGE_SIZE)
    text = processor.apply_chat_template(chat_messages(problem), add_generation_prompt=True)
    return processor, dict(processor(text=[text], images=[image], return_tensors="pt"))


def _round_weights(chunks: list[Any], dtype: torch.dtype) -> None:
    with torch.no_grad():
        for chunk in chunks:
            for parameter in chunk.parameters():
                parameter.copy_(parameter.to(dtype).to(parameter.dtype))


def _megatron_logits(chunks: list[Any], ids: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(s, V) float32 logits of the full vocabulary (gathered over TP) for one sequence."""
    from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

    model = chunks[0]
    device = next(model.parameters()).device  # the GPU where the export runs on one
    with torch.no_grad():
        logits = model(
            input_ids=ids.to(device),
            attention_mask=None,
            pixel_values=inputs["pixel_values"].to(device),
            image_grid_thw=inputs["image_grid_thw"].to(device),
        )
        return gather_from_tensor_model_parallel_region(logits.contiguous())[0].float().cpu()


def _megatron_greedy(
    chunks: list[Any], inputs: dict[str, torch.Tensor], stop: set[int]
) -> tuple[torch.Tensor, list[int]]:
    ids = inputs["input_ids"]
    first = None
    new: list[int] = []
    for _ in range(NEW_TOKENS):
        logits = _megatron_logits(chunks, ids, inputs)
        first = logits if first is None else first
        token = int(logits[-1].argmax())
        new.append(token)
        if token in stop:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert first is not None
    return first, new


def _stop_ids(model_dir: Path) -> set[int]:
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def check_export(model_dir: Path, chunks: list[Any], dtype: str) -> CheckReport | None:
    """Compare the export with the loaded Megatron model (collective); the report on rank 0, None elsewhere."""
    for chunk in chunks:
        chunk.eval()
    _round_weights(chunks, torch_dtype(dtype))
    processor, inputs = check_inputs(model_dir)
    stop = _stop_ids(model_dir)
    megatron_logits, megatron_new = _megatron_greedy(chunks, inputs, stop)
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch_dtype(dtype)).eval()
    with torch.no_grad():
        hf_logits = model(**inputs).logits[0].float()
        generated = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    hf_new = generated[0, inputs["input_ids"].shape[1] :].tolist()
    decode = processor.tokenizer.decode
    return CheckReport(
        dtype=dtype,
        max_abs_logit_diff=float((hf_logits - megatron_logits).abs().max()),
        tolerance=tolerance(dtype, megatron_logits),
        prompt_tokens=int(inputs["input_ids"].shape[1]),
        hf_continuation=decode(hf_new),
        megatron_continuation=decode(megatron_new),
    )
