"""A small byte-level BPE tokenizer with Qwen2.5-VL's special tokens, built offline and deterministically.

What it computes: a `tokenizers` BPE model trained on a built-in English corpus (the SpatialThinker prompt
vocabulary, the reward's tags `<observe> <scene> <think> <answer>`, scene-graph JSON, numbers, options),
with the pre-tokenizer, normaliser and decoder of Qwen2's tokenizer (the same split regex, NFC, byte level),
followed by Qwen2.5-VL's 22 special tokens in Qwen's order. Every byte is in the alphabet, so any text
round-trips exactly; only the merges (and so the ids) differ from the real Qwen tokenizer.

Departure from Qwen: about 4k tokens instead of 151,665, so ids of the special tokens differ
(`<|image_pad|>` is not 151655). Code must read ids from the tokenizer/config, never hard-code them.
"""

from __future__ import annotations

import itertools
import json
import re

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# Qwen2's pre-tokenisation regex (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5-VL's added tokens, in the order of the real tokenizer (ids 151643..151664 there).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# Qwen marks the tool-call and FIM tokens as non-special (they survive skip_special_tokens).
NON_SPECIAL = frozenset({"<tool_call>", "</tool_call>", *(t for t in SPECIAL_TOKENS if "fim" in t or "repo" in t)})
NON_SPECIAL = NON_SPECIAL | {"<|file_sep|>"}

_OBJECTS = (
    "man",
    "woman",
    "person",
    "bike",
    "car",
    "bus",
    "tree",
    "dog",
    "cat",
    "table",
    "chair",
    "bench",
    "cup",
    "bottle",
    "book",
    "shelf",
    "lamp",
    "window",
    "door",
    "circle",
    "square",
    "triangle",
    "rectangle",
    "star",
    "ellipse",
    "diamond",
    "hexagon",
    "ball",
    "box",
    "plate",
    "sign",
    "pole",
)
_COLOURS = (
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "white",
    "black",
    "gray",
    "brown",
    "pink",
    "cyan",
)
_PREDICATES = (
    "left of",
    "right of",
    "above",
    "below",
    "behind",
    "in front of",
    "on",
    "under",
    "near",
    "next to",
    "bigger than",
    "smaller than",
    "on top of",
    "beside",
    "holding",
    "touching",
    "far from",
    "inside",
)
_SENTENCES = (
    "You are a helpful assistant.",
    "You are a vision-language assistant tasked with answering a question by observing an image, identifying "
    "relevant objects and relationships, and reasoning through a structured scene graph.",
    "Identify the objects and relationships relevant to the question and give every object an id and a "
    "bounding box in pixel coordinates [x1, y1, x2, y2].",
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer.",
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put within "
    "<answer> </answer> tags.",
    "Now answer the following question:",
    "Which is closer to the camera? Which object is bigger? How many objects are there in the image?",
    "In which part of the image is the object located? top left corner, center, bottom right corner.",
    "Where is the man with respect to the bike? The man is behind the bike, so the answer is (A) behind.",
    "Is there a red circle above the blue square in the picture? yes no",
)
# Plain English about images, scenes and reasoning, so common words get their own tokens.
_PROSE = """
A photograph shows a quiet street in the morning. Several people walk along the pavement while a bus waits at
the corner. On the left side of the picture there is a tall building with many windows, and on the right side a
small park with green trees, wooden benches and a fountain. A woman wearing a yellow jacket is riding a bicycle
towards the camera. Behind her, two children are playing with a ball near the fence. The sky is bright and clear.
In the kitchen, a white plate sits on the table next to a glass of water. A cat sleeps under the chair, and a
lamp stands in the corner beside the bookshelf. The books on the top shelf are larger than the ones below.
Describe what you see, count the visible objects, compare their sizes, estimate their distances, and decide
which one is nearest to the viewer. Careful observation comes first; reasoning follows; the final answer is
short. When two objects overlap, the one drawn over the other is in front of it, and the hidden one is behind.
Objects lower in the frame are usually closer to the camera, while objects higher in the frame are farther away.
The question asks about spatial relations between objects: left, right, above, below, inside, outside, between,
across, along, facing, touching, holding, reaching, carrying, leaning against, sitting on, standing on, lying on,
parked on, hanging from, mounted on, growing on, walking on, looking at, watching, surrounding.
Categories include relation, reach, size, orientation, instance location, depth, distance, count and existence.
Difficulty levels are easy, medium and hard, and each question has a rating from one to ten.
Every answer must be one of the given options, written with its letter in parentheses, for example (C) three.
Numbers: zero one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand.
Shapes are drawn with solid colours on a plain background: circles, squares, triangles, rectangles, stars,
ellipses, diamonds and hexagons of different sizes. Each shape has an identifier such as circle.1 or square.2 and
a bounding box given by the coordinates of its top left and bottom right corners, measured in pixels.
The scene graph lists the objects and the relationships between them as subject, predicate and object.
"""


def training_corpus() -> list[str]:
    """The built-in English corpus: prompt sentences, tagged responses with scene JSON, options and numbers."""
    lines = list(_SENTENCES) + [line for line in _PROSE.splitlines() if line]
    for index, (obj, colour, pred) in enumerate(itertools.product(_OBJECTS, _COLOURS, _PREDICATES)):
        if index % 7:  # a deterministic subsample keeps training fast while covering every word
            continue
        other = _OBJECTS[(index // 7) % len(_OBJECTS)]
        box = [index % 640, (index * 3) % 480, index % 640 + 37, (index * 3) % 480 + 59]
        scene = {
            "objects": [{"id": f"{obj}.1", "bbox": box}, {"id": f"{other}.2", "bbox": [b + 11 for b in box]}],
            "relationships": [{"subject": f"{obj}.1", "predicate": pred, "object": f"{other}.2"}],
        }
        letter = "ABCD"[index % 4]
        lines.append(
            f"<observe>The {colour} {obj} is {pred} the {other}.</observe>\n<scene>{json.dumps(scene)}</scene>\n"
            f"<think>The {obj} is {pred} the {other}, so the answer is ({letter}) {pred}.</think>\n"
            f"<answer>({letter}) {pred}</answer>"
        )
        lines.append(
            f"Image size: ({box[2] * 2} x {box[3] * 2})\nQ. Where is the {colour} {obj} relative to the {other}?"
            f"\nOptions:\n(A) {pred}\n(B) {_PREDICATES[index % len(_PREDICATES)]}\n(C) {index % 10}\n(D) none"
        )
    # Case variants of every word (sentence starts, shouting answers like "(a) BEHIND") widen the vocabulary.
    words = sorted({word for line in lines for word in re.findall(r"[A-Za-z]+", line)})
    lines.append(" ".join(word.capitalize() for word in words))
    lines.append(" ".join(word.upper() for word in words))
    return lines


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """Train the byte-level BPE (at most `vocab_size` tokens including the special ones) and add the specials."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer
