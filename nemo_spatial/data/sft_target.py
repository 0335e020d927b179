"""The SFT target: a SpatialThinker-format response built from a row's ground truth (STVQA-7K `answer_option_text`).

STVQA-7K has a scene graph and an answer per row but no <observe> or <think> text, and the format reward needs
all four tags. The target is therefore, exactly (`sft_target(ground_truth)`):

    <observe>The question is about {labels}.</observe>
    <scene>{the ground truth's scene JSON, byte for byte}</scene>
    <think>{rel_1}. {rel_2}. ... So the answer is {answer}.</think>
    <answer>{answer}</answer>

with {labels} the object ids' labels in scene order ("man.1" -> "man", `_`/`-` -> space), joined by ", " and
" and "; {rel_k} = "subject predicate object" of each relationship, ids as written ("man.1 behind bike.1");
{answer} the ground truth's <answer> contents stripped ("(A) behind"). Without relationships the <think> is
"Reading the scene graph. So the answer is {answer}.". Scored by the `spatialthinker` reward against its own
ground truth it gets format 1, count 1, accuracy 1, spatial 1 (overall 1.0 to 6 places on the synthetic data,
whose boxes are large enough; tested), so it is also the synthetic data's perfect response (data/synth.py).

What the paper's SFT baseline trained on is not in the public code (hunarbatra/SpatialThinker has no SFT
script; its README credits a LLaMA-Factory fork for fine-tuning), so this template is ours: it adds nothing the
dataset does not state (the labels and relations restate the scene graph) and keeps the answer format the
reward and the evaluation read. `sft.target=answer_only` trains on the ground-truth text alone
(`<scene>...</scene>\\n<answer>...</answer>`, no observe/think: format reward 0 by construction).
"""

from __future__ import annotations

import json
import re

_SCENE = re.compile(r"<scene>(.*?)</scene>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
TARGET_FORMATS = ("spatialthinker", "answer_only")


class TargetError(ValueError):
    """A ground truth that is not `<scene>{json}</scene> ... <answer>...</answer>`."""


def _label(object_id: str) -> str:
    return object_id.split(".", 1)[0].replace("_", " ").replace("-", " ").strip()


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def sft_target(ground_truth: str, target_format: str = "spatialthinker") -> str:
    """The target text for one row (see the module docstring); TargetError names what is missing."""
    if target_format not in TARGET_FORMATS:
        raise ValueError(f"sft.target={target_format!r}; use one of: {', '.join(TARGET_FORMATS)}")
    scene_match, answer_match = _SCENE.search(ground_truth), _ANSWER.search(ground_truth)
    if scene_match is None or answer_match is None:
        raise TargetError(
            f"ground truth {ground_truth[:80]!r} has no <scene>...</scene> and <answer>...</answer>; SFT needs "
            "STVQA-7K's answer_option_text (data.answer_key)"
        )
    if target_format == "answer_only":
        return ground_truth
    scene_text, answer = scene_match.group(1), answer_match.group(1).strip()
    try:
        scene = json.loads(scene_text)
        objects = [str(o["id"]) for o in scene.get("objects", [])]
        relations = [f"{r['subject']} {r['predicate']} {r['object']}" for r in scene.get("relationships", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise TargetError(f"ground truth scene is not a scene graph ({error}): {scene_text[:80]!r}") from None
    labels = list(dict.fromkeys(_label(o) for o in objects)) or ["the whole image"]
    reasoning = ". ".join(relations) if relations else "Reading the scene graph"
    return (
        f"<observe>The question is about {_join(labels)}.</observe>\n"
        f"<scene>{scene_text}</scene>\n"
        f"<think>{reasoning}. So the answer is {answer}.</think>\n"
        f"<answer>{answer}</answer>"
    )
