"""Eval prompt templates, and the images each backend gets.

Templates (`--template`):
- `spatialthinker` (default): the TRAINING prompt (`nemo_spatial.data.prompts.spatialthinker_problem`, the
  prefix the policy was trained on) with the real size of the first image, in original pixels as in training,
  filled into `Image size: (W x H)`; content = the images, then the text (training's leading space kept).
  Departs from upstream's eval prompt on purpose (defect D1: upstream leaves `{Width} x {Height}` unfilled
  and uses a shorter instruction than training); `upstream` restores it.
- `upstream`: upstream `format_instruction(spatial_thinker=True)` exactly: its SPATIAL_THINKER_TEMPLATE with
  the placeholders unsubstituted, then `(W x H)` and the question; content = images, then the text.
- `reasoning`, `no_reasoning`: upstream's templates of those names, word for word.
Per-benchmark edits, as upstream (all templates): realworld_qa loses "Please answer directly with only the
letter..." under spatialthinker/upstream; spatialbench and mmvp get a final period and " Please give the final
answer within answer tags."; hallusionbench gets "\\nOptions:\\n(A) Yes \\n(B) No" after templating (upstream's
trailing space kept); mme-realworld-lite (options only in a list column) gets "\\nOptions:" lines "(A) text".

Images: decoded (`data.images.decode_image`; MME-RealWorld's base64 text first), then resized by each
backend as `pixel_bounds` says: vllm and hf apply SpatialThinker's resize to [min_pixels, max_pixels] before
the Qwen2.5-VL processor (which rounds to multiples of 28): the training bounds 262,144-4,194,304 by default,
qwen_vl_utils' defaults 3,136-12,845,056 under `--template upstream` (what upstream's eval used; eval-spec
section 5), `--min-pixels/--max-pixels` to choose. openai sends full-resolution PNGs and anthropic JPEGs
under 5 MiB, as upstream (backends/api.py).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from PIL import Image

from nemo_spatial.data.images import decode_image, prepare_image
from nemo_spatial.data.prompts import IMAGE_MARKER, spatialthinker_problem
from nemo_spatial.errors import UserError
from nemo_spatial.eval.loading import Sample

TEMPLATES = ("spatialthinker", "upstream", "reasoning", "no_reasoning")
TRAINING_PIXELS = (262_144, 4_194_304)
QWEN_VL_UTILS_PIXELS = (3_136, 12_845_056)

UPSTREAM_SPATIAL_THINKER_TEMPLATE = (
    "You FIRST observe the image in <observe> </observe> tags, then visualise the relevant scene graph in "
    "<scene> </scene> tags, followed by thinking about the reasoning process as an internal monologue within "
    "<think> </think> tags and then provide the final answer. The final answer MUST BE put within <answer> "
    "</answer> tags, and only return the final choice including the correct option and answer within the "
    "answer tags, e.g., <answer> ({correct_option}) {correct_answer} </answer>.\n\nImage size: {Width} x {Height}"
)
UPSTREAM_REASONING_HINT = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put within "
    "<answer> </answer> tags, and only return the final choice including the correct option and answer within "
    "the answer tags, e.g., <answer> ({correct_option}) {correct_answer} </answer>."
)
RWQA_DIRECT = "Please answer directly with only the letter of the correct option and nothing else."
ANSWER_TAGS_HINT = " Please give the final answer within answer tags."
HALLUSION_SUFFIX = "\nOptions:\n(A) Yes \n(B) No"


@dataclass
class Prompt:
    """What a backend sends: the images (PIL, in order) and the text after them, as one user turn."""

    sample: Sample
    text: str
    images: list[Image.Image]
    leading_space: bool = False  # the training prompt's " " before the text (data.prompts.user_content)

    def content(self) -> list[dict[str, Any]]:
        """Chat content for the HF processor's template: every image, then the text."""
        text = f" {self.text}" if self.leading_space else self.text
        return [*({"type": "image"} for _ in self.images), {"type": "text", "text": text}]


def pixel_bounds(template: str, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    default = QWEN_VL_UTILS_PIXELS if template == "upstream" else TRAINING_PIXELS
    return (min_pixels or default[0], max_pixels or default[1])


def decode(value: Any, base64_text: bool) -> Image.Image:
    if base64_text and isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=False)
        except ValueError as error:
            raise UserError(f"an image column holds text that is not base64: {error}") from None
    return decode_image(value)


def question_text(sample: Sample, template: str) -> str:
    """The question after upstream's per-benchmark edits (before templating)."""
    text = sample.question
    if sample.benchmark == "realworld_qa" and template in ("spatialthinker", "upstream"):
        text = text.replace(RWQA_DIRECT, "")
    if sample.benchmark in ("spatialbench", "mmvp"):
        text = (text if text.endswith(".") else f"{text}.") + ANSWER_TAGS_HINT
    if sample.benchmark == "mme-realworld-lite" and sample.choices:
        text += "\nOptions:\n" + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(sample.choices))
    if sample.benchmark == "mindcube-tiny":
        text = text.replace(IMAGE_MARKER, "").strip()
    return text


def format_text(sample: Sample, template: str, size: tuple[int, int]) -> str:
    question = question_text(sample, template)
    width, height = size
    if template == "spatialthinker":
        text = spatialthinker_problem(question, width, height).replace(IMAGE_MARKER, "").strip()
    elif template == "upstream":
        tail = f"({width} x {height})\n\nNow answer the following question:\n{question}"
        text = f"{UPSTREAM_SPATIAL_THINKER_TEMPLATE}\n{tail}"
    elif template == "reasoning":
        text = f"{UPSTREAM_REASONING_HINT}\nQuestion: {question}"
    elif template == "no_reasoning":
        text = f"Question: {question}"
    else:
        raise UserError(f"unknown --template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if sample.benchmark == "hallusionbench":
        text += HALLUSION_SUFFIX
    return text


def build_prompt(sample: Sample, template: str, bounds: tuple[int, int] | None, base64_images: bool = False) -> Prompt:
    """The prompt of one sample; `bounds` None keeps the original images (the API backends resize themselves).

    Raises ImageError (data.images) for an unusable image: the runner records it as that sample's error.
    """
    originals = [decode(v, base64_images) for v in sample.images]
    size = originals[0].size if originals else (0, 0)
    if bounds is None:
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in originals]
    else:
        images = [prepare_image(im, bounds[0], bounds[1]) for im in originals]
    text = format_text(sample, template, size)
    return Prompt(sample, text, images, leading_space=template == "spatialthinker")
