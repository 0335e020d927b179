"""Prompt text: SpatialThinker's instruction prefix, the vanilla (r1v) instruction, and the chat messages.

What it computes:
- `spatialthinker_problem(question_with_options, W, H)`: the text of STVQA-7K's `problem` column, i.e. the
  instruction prefix + "\\nQ. " + question_with_options. The prefix follows upstream's structure in order:
  `<image>`, the role sentence, the task list (question-relevant objects and relations only, ids
  `object_name.number`, pixel boxes `[x1, y1, x2, y2]`), the 4-tag schema (`<observe>`, `<scene>`, `<think>`,
  `<answer>`), one worked example (a man behind a bike, answer `(A) behind`), `Image size: (W x H)`, and
  "Now answer the following question:". The wording between those fixed pieces is ours (written from the
  description in upstream-facts.md); training on STVQA-7K uses the dataset's own `problem` text unchanged.
- `R1V_INSTRUCTION`: the vanilla-GRPO baseline's instruction, word for word the `FORMAT_PROMPT` of upstream's
  `scripts/qwen_2_5_{3b,7b}_stvqa_vanilla_grpo.sh` (an input of the experiment, like a hyperparameter; its
  `{correct_option}` / `{correct_answer}` placeholders are literal text there too). Upstream's joining rule
  (`format_prompt.strip() + " " + question_with_options`) gives "...\\n \\nQ. <question>".
- `user_content(text)`: upstream's image placement: every `<image>` marker is removed, the text stripped, and
  the image put first: `[{"type": "image"}, {"type": "text", "text": " " + text}]`. The leading space is
  upstream's (it splits "<image> " + text on the marker) and is kept so prompts tokenize exactly as upstream.
The example scene deliberately contains no "Image size:" text: the reward reads the first such match.
"""

from __future__ import annotations

from typing import Any

IMAGE_MARKER = "<image>"

SPATIALTHINKER_PREFIX = """<image>You are a vision-language assistant tasked with answering a question by observing an \
image, identifying relevant objects and relationships, and reasoning through a structured scene graph.

Your task:
1. Observe the image and note what matters for the question.
2. Build a scene graph with only the objects and relationships relevant to the question.
3. Give every object an id of the form object_name.number (for example man.1) and a bounding box \
[x1, y1, x2, y2] in pixel coordinates of the image.
4. Reason over the scene graph, then choose the answer.

Answer in exactly this format:
<observe>what you see that matters for the question</observe>
<scene>{{"objects": [{{"id": "object_name.1", "bbox": [x1, y1, x2, y2]}}], "relationships": \
[{{"subject": "object_name.1", "predicate": "relation", "object": "object_name.2"}}]}}</scene>
<think>step-by-step reasoning over the scene graph</think>
<answer>(X) option text</answer>

Example:
Q. Where is the man with respect to the bike?
Options:
(A) behind
(B) in front of
<observe>A man stands on the far side of a bike; the bike hides part of his legs.</observe>
<scene>{{"objects": [{{"id": "bike.1", "bbox": [0, 272, 310, 451]}}, {{"id": "man.1", "bbox": [0, 165, 38, 278]}}], \
"relationships": [{{"subject": "man.1", "predicate": "behind", "object": "bike.1"}}]}}</scene>
<think>The bike covers the man, and his box starts higher in the frame, so he is farther from the camera than \
the bike: the man is behind the bike.</think>
<answer>(A) behind</answer>

Image size: ({W} x {H})
Now answer the following question:"""

R1V_INSTRUCTION = (
    "<image> You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer.\nThe reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put "
    "within <answer> </answer> tags, and only return the final choice including the correct option and answer "
    "within the answer tags, e.g., <answer> ({correct_option}) {correct_answer} </answer>.\n \nQ. "
)


def question_with_options(question: str, options: list[str]) -> str:
    """STVQA's `question_with_options`: the question, then "Options:" and one "(A) text" line per option."""
    lines = [f"{question}\nOptions:"] + [f"({chr(ord('A') + i)}) {option}" for i, option in enumerate(options)]
    return "\n".join(lines)


def spatialthinker_problem(question_with_opts: str, width: int, height: int) -> str:
    """STVQA's `problem` column: the SpatialThinker prefix for a W x H image + "\\nQ. " + the question."""
    return f"{SPATIALTHINKER_PREFIX.format(W=width, H=height)}\nQ. {question_with_opts}"


def default_format_prompt(prompt_format: str) -> str:
    """The instruction a prompt format puts before the prompt column ("" for spatialthinker)."""
    return R1V_INSTRUCTION if prompt_format == "r1v" else ""


def prompt_text(row_prompt: str, format_prompt: str = "") -> str:
    """Upstream's joining rule: `format_prompt.strip() + " " + prompt` when a format prompt is set."""
    return f"{format_prompt.strip()} {row_prompt}" if format_prompt else row_prompt


def user_content(text: str) -> list[dict[str, Any]]:
    """The chat content for one image and this text: image first, markers removed, upstream's leading space."""
    stripped = text.replace(IMAGE_MARKER, "").strip()
    return [{"type": "image"}, {"type": "text", "text": f" {stripped}"}]


def chat_messages(text: str) -> list[dict[str, Any]]:
    """One user turn; Qwen's chat template adds its default system prompt, as upstream."""
    return [{"role": "user", "content": user_content(text)}]
