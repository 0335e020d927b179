"""Prompt text against upstream's format: STVQA's problem column, the r1v baseline, image placement, template."""

from __future__ import annotations

import re

from nemo_spatial.data.prompts import (
    R1V_INSTRUCTION,
    SPATIALTHINKER_PREFIX,
    chat_messages,
    prompt_text,
    question_with_options,
    spatialthinker_problem,
    user_content,
)

QWO = "Where is the man with respect to the bike?\nOptions:\n(A) behind\n(B) in front of"


def _upstream_content(prompt: str) -> list[dict]:
    """Upstream RLHFDataset.__getitem__: '<image> ' + stripped text, split on the marker, image first."""
    prompt = "<image> " + prompt.replace("<image>", "").strip()
    content: list[dict] = []
    for i, part in enumerate(prompt.split("<image>")):
        if i != 0:
            content.append({"type": "image"})
        if part:
            content.append({"type": "text", "text": part})
    return content


def test_question_with_options_is_stvqas_format() -> None:
    assert question_with_options("Where is the man with respect to the bike?", ["behind", "in front of"]) == QWO


def test_problem_has_upstreams_pieces_in_order() -> None:
    problem = spatialthinker_problem(QWO, 640, 480)
    pieces = [
        "<image>",
        "You are a vision-language assistant tasked with answering a question by observing an image, identifying "
        "relevant objects and relationships, and reasoning through a structured scene graph.",
        "object_name.number",
        "[x1, y1, x2, y2]",
        "<observe>",
        "<scene>",
        "<think>",
        "<answer>",
        "Example:",
        '"subject": "man.1", "predicate": "behind", "object": "bike.1"',
        "<answer>(A) behind</answer>",
        "Image size: (640 x 480)",
        "Now answer the following question:",
        "\nQ. " + QWO,
    ]
    position = 0
    for piece in pieces:  # each piece after the previous one
        position = problem.index(piece, position) + len(piece)
    assert problem.startswith("<image>")
    assert problem.endswith("Image size: (640 x 480)\nNow answer the following question:\nQ. " + QWO)


def test_the_reward_reads_the_true_image_size_first() -> None:
    problem = spatialthinker_problem(QWO, 1023, 77)
    assert re.search(r"Image size: \((.*?) x (.*?)\)", problem).groups() == ("1023", "77")
    assert SPATIALTHINKER_PREFIX.count("Image size") == 1


def test_the_example_scene_is_valid_json_in_the_reward_format() -> None:
    import json

    example = SPATIALTHINKER_PREFIX.split("Example:")[1].format(W=1, H=1)
    scene = json.loads(re.search(r"<scene>(.*?)</scene>", example).group(1))
    assert scene["relationships"] == [{"subject": "man.1", "predicate": "behind", "object": "bike.1"}]
    assert re.search(r"<answer>(.*?)</answer>", example).group(1) == "(A) behind"


def test_image_goes_first_as_upstream() -> None:
    problem = spatialthinker_problem(QWO, 640, 480)
    assert user_content(problem) == _upstream_content(problem)
    assert (
        user_content("Q. x <image> y")
        == _upstream_content("Q. x <image> y")
        == [
            {"type": "image"},
            {"type": "text", "text": " Q. x  y"},
        ]
    )
    assert chat_messages("hi") == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " hi"}]}]


def test_r1v_prompt_follows_upstreams_joining_rule() -> None:
    text = prompt_text(QWO, R1V_INSTRUCTION)
    assert text == R1V_INSTRUCTION.strip() + " " + QWO
    assert "<think> </think>" in text and "<answer> </answer>" in text and text.endswith("\n \nQ. " + QWO)
    assert user_content(text)[1]["text"].startswith(" You FIRST think")  # the marker moved out, image first
    assert "e.g., <answer> ({correct_option}) {correct_answer} </answer>.\n \nQ. " + QWO in text  # upstream's text
    upstream_like = "<image> You FIRST think.\n \nQ. "  # any pasted format prompt is joined the same way
    assert prompt_text(QWO, upstream_like) == "<image> You FIRST think.\n \nQ. " + QWO


def test_spatialthinker_prompt_uses_the_column_as_is() -> None:
    assert prompt_text("abc") == "abc"


def test_rendered_chat_prompt(tiny_model_dir) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rendered = processor.apply_chat_template(chat_messages("<image>Q. hi"), add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|> Q. hi<|im_end|>\n<|im_start|>assistant\n"
    )
