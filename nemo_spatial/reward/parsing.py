"""Text parsing for the rewards: tag blocks, the scene JSON, the image size, and scene-graph validity.

Every function here returns what the upstream regular expressions return (SpatialThinker's
`spatial_sgg.py`, EasyR1's `r1v.py`) but in time linear in the text. Upstream's lazy `.*?` patterns are
quadratic on adversarial text (a megabyte of unmatched `<answer>` tags takes minutes); a policy under RL
produces such text, so these are written with `str.find` and tested for equality against the regexes.

One bound departs from upstream: a `<scene>` block over MAX_SCENE_CHARS (1,000,000 characters; a realistic
scene is a few hundred, 256 objects with long labels under 100,000) is not parsed and counts as invalid, so
the one step of scoring that cannot be interrupted (the C JSON parser) stays under ~0.3 s.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

ID_PATTERN = re.compile(r"[a-zA-Z_]+\.\d+")
IMAGE_SIZE_PATTERN = re.compile(r"Image size: \((.*?) x (.*?)\)")
OBJECT_KEYS = frozenset(("id", "bbox"))
RELATION_KEYS = ("subject", "predicate", "object")
MAX_SCENE_CHARS = 1_000_000


def first_block(text: str, tag: str) -> str | None:
    """Contents of the first `<tag>...</tag>` block, as `re.search(r"<tag>(.*?)</tag>", text, re.DOTALL)`.

    The leftmost opening tag decides: a closing tag after it gives the match, and if none follows it, none
    follows any later opening tag either. None when there is no such block.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    start = text.find(opening)
    if start < 0:
        return None
    start += len(opening)
    end = text.find(closing, start)
    return None if end < 0 else text[start:end]


def first_block_one_line(text: str, tag: str) -> str | None:
    """As `first_block` but with `.` not matching a newline (`re.search(r"<tag>(.*?)</tag>", text)`).

    Each of the three searches (opening tag, closing tag, newline) starts past where its previous one
    stopped, so the text is read at most three times whatever the tags and newlines in it; searching for
    the closing tag afresh after every opening tag made `"<tag>\\n" * n + "</tag>"` quadratic.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    start = text.find(opening)
    end = -1
    while start >= 0:
        content = start + len(opening)
        if end < content:
            # Only now can the first closing tag at or after `content` differ from the one found before.
            end = text.find(closing, content)
            if end < 0:
                return None
        line_end = text.find("\n", content)
        if line_end < 0 or end < line_end:
            return text[content:end]
        # Every opening tag before this newline sees the same closing tag beyond it: skip past the line.
        start = text.find(opening, line_end + 1)
    return None


def extract_answer(text: str) -> str:
    """The stripped contents of the first `<answer>` block; empty when there is none."""
    block = first_block(text, "answer")
    return "" if block is None else block.strip()


def parse_scene(text: str) -> dict[str, Any]:
    """The first `<scene>` block parsed as JSON; `{}` when absent, invalid, or not an object.

    Python's `json` (as upstream) accepts `NaN` and `Infinity`; numbers that need them are handled where
    boxes are used. Deep nesting raises RecursionError inside `json`, which counts as invalid here, as does a
    block over MAX_SCENE_CHARS.
    """
    block = first_block(text, "scene")
    if block is None or len(block) > MAX_SCENE_CHARS:
        return {}
    try:
        parsed = json.loads(block.strip())
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def parse_image_size(problem: str) -> tuple[int, int]:
    """(W, H) from `Image size: (W x H)` in the prompt. Raises ValueError naming what is wrong."""
    match = IMAGE_SIZE_PATTERN.search(problem)
    if match is None:
        raise ValueError("prompt has no 'Image size: (W x H)'; the spatial reward needs it to normalise boxes")
    try:
        width, height = int(match.group(1)), int(match.group(2))
    except ValueError:
        raise ValueError(f"prompt's image size {match.group(0)!r} is not two integers") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"prompt's image size {match.group(0)!r} must be positive")
    return width, height


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def is_number(value: object) -> bool:
    # bool is an int in Python, and upstream's isinstance check lets it through: keep that.
    return isinstance(value, (int, float))


def is_valid_object(obj: object) -> bool:
    """Keys exactly {id, bbox}; id like `name.3`; bbox a list of four numbers."""
    if not isinstance(obj, dict) or obj.keys() != OBJECT_KEYS:
        return False
    bbox = obj["bbox"]
    return is_valid_id(obj["id"]) and isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))


def is_valid_relation(rel: object) -> bool:
    """String subject, predicate, object (more keys allowed); subject and object like `name.3`."""
    if not isinstance(rel, dict) or not all(isinstance(rel.get(key), str) for key in RELATION_KEYS):
        return False
    return is_valid_id(rel["subject"]) and is_valid_id(rel["object"])


def label_of(object_id: str) -> str:
    """The label compared by the similarity: the id's name before the first `.`, normalised.

    Upstream normalises the whole id, splits on `.`, and normalises again; the double pass is kept.
    """
    return _normalise(_normalise(object_id).split(".")[0])


def _normalise(label: str) -> str:
    return label.replace("_", " ").replace("-", " ").strip().lower()


def box_as_floats(bbox: object) -> tuple[float, float, float, float]:
    """The first four coordinates as floats; ints too large for a float become +-inf.

    Raises ValueError for a ground-truth box that is not a list of at least four numbers.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) < 4:
        raise ValueError(f"box {str(bbox)[:80]} is not a list of four numbers")
    x1, y1, x2, y2 = bbox[:4]
    if not (is_number(x1) and is_number(y1) and is_number(x2) and is_number(y2)):
        raise ValueError(f"box {str(bbox)[:80]} is not a list of four numbers")
    return _to_float(x1), _to_float(y1), _to_float(x2), _to_float(y2)


def _to_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float range (json reads 1e999 as inf, but 10**400 as an int)
        return math.inf if value > 0 else -math.inf
