"""What the viewers show about one response's scene graph: the objects it predicts, why a scene does not
count (the spatialthinker format check, reason by reason), and the reward's own matching of its boxes to the
ground truth's (`reward.spatialthinker.match_objects`, the Hungarian assignment the spatial term sums over).

The matching is drawn for every response with valid objects, also when the reward's gates (format, then
accuracy) left the spatial term at 0: it shows how close the boxes were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nemo_spatial.reward.parsing import (
    first_block,
    is_valid_object,
    is_valid_relation,
    parse_image_size,
    parse_scene,
)
from nemo_spatial.reward.similarity import LabelSimilarity
from nemo_spatial.reward.spatialthinker import TAGS, GroundTruth, match_objects, parse_ground_truth


@dataclass
class SceneView:
    """A response's scene as the viewer draws it."""

    scene: dict[str, Any]
    objects: list[dict[str, Any]]  # the valid ones, in the response's order
    problems: list[str] = field(default_factory=list)  # why the scene fails the format check (empty: it passes)
    matches: list[tuple[int, int, float]] = field(default_factory=list)  # (gt index, index in objects, mciou)


def scene_problems(text: str) -> list[str]:
    """Every reason the spatialthinker format check fails on `text`, in words (empty when it passes)."""
    problems = [f"no <{tag}>...</{tag}> block" for tag in TAGS if first_block(text, tag) is None]
    problems += [f"<{tag}> appears {n} times" for tag in TAGS if (n := text.count(f"<{tag}>")) > 1]
    block = first_block(text, "scene")
    if block is None:
        return problems
    try:
        parsed = json.loads(block.strip())
    except (ValueError, RecursionError) as error:
        return [*problems, f"the scene is not valid JSON: {error}"]
    if not isinstance(parsed, dict):
        return [*problems, f"the scene is a JSON {type(parsed).__name__}, not an object"]
    if not parsed:
        return [*problems, "the scene is an empty object"]
    objects, relations = parsed.get("objects", []), parsed.get("relationships", [])
    if not isinstance(objects, list):
        problems.append(f"'objects' is a {type(objects).__name__}, not a list")
        objects = []
    if not isinstance(relations, list):
        problems.append(f"'relationships' is a {type(relations).__name__}, not a list")
        relations = []
    for i, obj in enumerate(objects):
        if not is_valid_object(obj):
            problems.append(f"object {i} {_short(obj)} is not {{'id': 'name.N', 'bbox': [x1, y1, x2, y2]}}")
    for i, rel in enumerate(relations):
        if not is_valid_relation(rel):
            problems.append(f"relationship {i} {_short(rel)} needs string subject/predicate/object, ids like name.N")
    ids = [obj["id"] for obj in objects if isinstance(obj, dict) and "id" in obj]
    duplicates = sorted({str(i) for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"duplicate object ids: {', '.join(duplicates)}")
    return problems


def view_scene(
    response: str, ground_truth: GroundTruth, size: tuple[int, int], similarity: LabelSimilarity
) -> SceneView:
    scene = parse_scene(response)
    raw = scene.get("objects")
    objects = [obj for obj in raw if is_valid_object(obj)] if isinstance(raw, list) else []
    view = SceneView(scene=scene, objects=objects, problems=scene_problems(response))
    if objects and ground_truth.boxes:
        view.matches = match_objects(ground_truth, objects, size[0], size[1], similarity)
    return view


def ground_truth_of(text: str) -> tuple[GroundTruth | None, str | None]:
    """The parsed ground truth, or None and why (a data error the viewer shows instead of the boxes)."""
    try:
        return parse_ground_truth(text), None
    except ValueError as error:
        return None, str(error)


def image_size_of(prompt: str) -> tuple[tuple[int, int] | None, str | None]:
    try:
        return parse_image_size(prompt), None
    except ValueError as error:
        return None, str(error)


def _short(value: object, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
