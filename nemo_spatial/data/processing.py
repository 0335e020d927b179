"""One row -> one model-ready prompt: text, resized image, Qwen2.5-VL processor outputs.

What it computes, per row (upstream `RLHFDataset.__getitem__`):
1. text = prompts.prompt_text(row[prompt_key], format_prompt); chat messages with the image first
   (prompts.user_content); the processor's chat template with the generation prompt.
2. image = images.prepare_image(row[image_key], min_pixels, max_pixels).
3. The Qwen2.5-VL processor (from the model's directory): `input_ids` with `<|image_pad|>` expanded to
   grid_t*grid_h*grid_w / merge^2 tokens, `pixel_values`, `image_grid_thw`, `mm_token_type_ids`;
   `raw_prompt_ids` are the same text tokenized with ONE `<|image_pad|>` (what vLLM takes; it expands itself).
   With `pixels=False` (the GRPO driver's streams) the image processor is not run: `image_grid_thw` comes from
   the image's size by the processor's own `smart_resize`, the prompt text is expanded to that many image pads
   and tokenized (the same input_ids, checked in the tests), and `pixel_values` stay None; `PixelPreparer`
   computes them later, on the rank that trains on the prompt (the fp32 patches are ~8x the image's bytes).
4. No mRoPE position ids: the policy's model derives them from input_ids and image_grid_thw on every pipeline
   stage, and vLLM computes its own, so none is computed here (nothing would read it).
5. Prompts longer than max_prompt_length: `filter` skips the row (counted, warned), `truncate` drops tokens
   from the start of the user's text (the instruction; the image, the question and the assistant header
   stay, so image tokens always match the image), `error` stops with the fix. A prompt that would still be too
   long without any of its text is skipped under `truncate` too.
Departure: upstream left-pads to max_prompt_length here; padding is left to the batcher (less memory, no change).
Errors of one row (bad image, missing value, too long) come back as `SampleError`, never as an exception,
so a data worker never dies on one bad row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nemo_spatial.data.config import DataConfig
from nemo_spatial.data.images import ImageError, prepare_image
from nemo_spatial.data.prompts import chat_messages, default_format_prompt, prompt_text
from nemo_spatial.data.schema import METADATA_COLUMNS


@dataclass
class PromptSample:
    """A model-ready prompt. Tensors are unbatched: input_ids (L,), pixel_values (P, C)."""

    row: int  # index of the row in its source
    prompt_text: str  # after the chat template, one <|image_pad|>
    raw_prompt_ids: list[int]  # prompt_text tokenized (for vLLM, with the image as multi_modal_data)
    input_ids: torch.Tensor  # image pads expanded (for the trainer's forward)
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None  # None until PixelPreparer ran (a stream opened with pixels=False)
    image_grid_thw: torch.Tensor  # (1, 3)
    image: Any  # the resized PIL image (what vLLM gets)
    ground_truth: str  # row[answer_key]: the reward's ground truth
    problem: str  # row[problem_key]: the reward reads `Image size: (W x H)` from it
    truncated_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SampleError:
    """A row that could not become a prompt; `kind` groups them in the counters."""

    row: int
    kind: str  # image | missing | overlong | processor
    message: str


class PromptProcessor:
    """Turns rows into PromptSamples; holds the HF processor (loaded from `processor_path` on first use)."""

    def __init__(self, cfg: DataConfig, processor_path: str, pixels: bool = True) -> None:
        self.cfg = cfg
        self.processor_path = processor_path
        self.pixels = pixels  # False: no pixel_values (PixelPreparer makes them where they are trained on)
        self.format_prompt = cfg.format_prompt or default_format_prompt(cfg.prompt_format)
        self._processor: Any = None

    def __getstate__(self) -> dict[str, Any]:  # workers load their own processor
        return {**self.__dict__, "_processor": None}

    def load(self) -> None:
        """Load the processor from `processor_path` (a model directory or hub id)."""
        from transformers import AutoProcessor

        try:
            self._processor = AutoProcessor.from_pretrained(self.processor_path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"cannot load the Qwen2.5-VL processor from {self.processor_path!r} ({error}); point it at a model "
                "directory with the processor files (e.g. a downloaded Qwen2.5-VL-3B-Instruct, or "
                "`python -m nemo_spatial.models.tiny --out DIR`)"
            ) from None
        tokenizer = self._processor.tokenizer
        self.vision_end_id = tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.im_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    @property
    def processor(self) -> Any:
        if self._processor is None:
            self.load()
        return self._processor

    def chat_prompt(self, row_prompt: str) -> str:
        text = prompt_text(row_prompt, self.format_prompt)
        return self.processor.apply_chat_template(chat_messages(text), add_generation_prompt=True, tokenize=False)

    def __call__(self, index: int, row: dict[str, Any]) -> PromptSample | SampleError:
        cfg = self.cfg
        for key in (cfg.prompt_key, cfg.answer_key, cfg.problem_key):
            if not isinstance(row.get(key), str):
                return SampleError(index, "missing", f"row {index}: column {key!r} is {row.get(key)!r}, not text")
        try:
            image = prepare_image(row.get(cfg.image_key), cfg.min_pixels, cfg.max_pixels)
        except ImageError as error:
            return SampleError(index, "image", f"row {index}: {error}")
        prompt = self.chat_prompt(row[cfg.prompt_key])
        try:
            encoded = self._encode(image, prompt)
        except ValueError as error:
            return SampleError(index, "processor", f"row {index}: the processor rejected it: {error}")
        raw_ids = self.processor.tokenizer.encode(prompt, add_special_tokens=False)
        ids, types = encoded["input_ids"][0], encoded["mm_token_type_ids"][0]
        excess = ids.shape[0] - cfg.max_prompt_length
        truncated = 0
        if excess > 0:
            message = f"row {index}: prompt has {ids.shape[0]} tokens > data.max_prompt_length={cfg.max_prompt_length}"
            if cfg.overlong == "error":
                raise ValueError(
                    f"{message}; raise data.max_prompt_length, lower data.max_pixels, or set data.overlong=filter "
                    "(skip such rows) or data.overlong=truncate (drop instruction text)"
                )
            cut = self._truncate(ids, types, raw_ids, excess) if cfg.overlong == "truncate" else None
            if cut is None:
                return SampleError(index, "overlong", f"{message}; skipped (data.overlong={cfg.overlong})")
            ids, types, raw_ids = cut
            truncated = excess
        grid = encoded["image_grid_thw"]
        return PromptSample(
            row=index,
            prompt_text=prompt if not truncated else self.processor.tokenizer.decode(raw_ids),
            raw_prompt_ids=list(raw_ids),
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=encoded.get("pixel_values"),
            image_grid_thw=grid,
            image=image,
            ground_truth=row[cfg.answer_key],
            problem=row[cfg.problem_key],
            truncated_tokens=truncated,
            metadata={k: row[k] for k in METADATA_COLUMNS if k in row},
        )

    def _encode(self, image: Any, prompt: str) -> dict[str, torch.Tensor]:
        """input_ids (1, L), mm_token_type_ids (1, L), image_grid_thw (1, 3), and pixel_values when `self.pixels`."""
        processor = self.processor
        if self.pixels:
            out = processor(images=[image], text=[prompt], add_special_tokens=False, return_tensors="pt")
            return dict(out)
        grid = image_grid(processor.image_processor, image)
        pads = int(grid.prod()) // processor.image_processor.merge_size**2
        expanded = prompt.replace(processor.image_token, processor.image_token * pads)
        ids = processor.tokenizer([expanded], add_special_tokens=False, return_tensors="pt")["input_ids"]
        types = (ids == processor.image_token_id).long()
        if int(types.sum()) != pads:
            raise ValueError(f"the prompt holds {int(types.sum())} image tokens, not {pads}")
        return {"input_ids": ids, "mm_token_type_ids": types, "image_grid_thw": grid}

    def _truncate(
        self, ids: torch.Tensor, types: torch.Tensor, raw_ids: list[int], excess: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]] | None:
        """Drop `excess` tokens right after <|vision_end|>; None when the user's text is shorter than that."""
        start = int((ids == self.vision_end_id).nonzero()[0, 0]) + 1
        end = int((ids == self.im_end_id).nonzero()[-1, 0])  # the user's turn ends at the last <|im_end|>
        if end - start < excess:
            return None
        raw_start = raw_ids.index(self.vision_end_id) + 1
        keep = torch.cat([torch.arange(start), torch.arange(start + excess, ids.shape[0])])
        return ids[keep], types[keep], raw_ids[:raw_start] + raw_ids[raw_start + excess :]


def image_grid(image_processor: Any, image: Any) -> torch.Tensor:
    """(1, 3) int64 (t, h, w) patch grid the Qwen2.5-VL image processor gives this image, from its size alone
    (the processor's own `smart_resize`, its defaults: what `get_number_of_image_patches` computes for vLLM)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    size = image_processor.size
    factor = image_processor.patch_size * image_processor.merge_size
    height, width = smart_resize(
        image.height, image.width, factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"]
    )
    patch = image_processor.patch_size
    return torch.tensor([[1, height // patch, width // patch]], dtype=torch.long)


class PixelPreparer:
    """A rank's image preparation: the Qwen2.5-VL image processor's pixel_values for the prompts it trains on.

    Deterministic (the same image gives the same patches as the full processor call), so where a prompt's
    patches are made does not change the losses; the patch grid must equal the one its input_ids were
    expanded for (`image_grid`), else the prompt's tokens and image would disagree.
    """

    def __init__(self, processor_path: str) -> None:
        self.processor_path = processor_path
        self._image_processor: Any = None
        self.prepared = 0  # images prepared so far (the benchmark and the tests read it)

    def __call__(self, prompts: dict[int, PromptSample]) -> dict[int, PromptSample]:
        """The same prompts, each with its pixel_values (prepared here where it had none)."""
        return {index: self.prepare(prompt) for index, prompt in prompts.items()}

    def prepare(self, prompt: PromptSample) -> PromptSample:
        if prompt.pixel_values is not None:
            return prompt
        if self._image_processor is None:
            from transformers import AutoImageProcessor

            self._image_processor = AutoImageProcessor.from_pretrained(self.processor_path)
        out = self._image_processor(images=[prompt.image], return_tensors="pt")
        if not torch.equal(out["image_grid_thw"].long(), prompt.image_grid_thw.long()):
            raise ValueError(
                f"row {prompt.row}: the image processor gives grid {out['image_grid_thw'].tolist()}, the prompt's "
                f"tokens were expanded for {prompt.image_grid_thw.tolist()} (processor files differ?)"
            )
        self.prepared += 1
        return replace(prompt, pixel_values=out["pixel_values"])
