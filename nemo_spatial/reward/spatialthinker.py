"""The `spatialthinker` reward: SpatialThinker's dense scene-graph reward, number for number.

Reproduces `spatial_sgg_compute_score` of the public SpatialThinker code (../shared/docs/reward-spec.md):
    overall = 0.1 * format + 0.2 * count + 0.5 * accuracy + 0.2 * spatial
with count and accuracy 0 unless format == 1 (lexicographic gating), spatial 0 unless accuracy == 1.
- format: all four tag blocks present, each opening tag exactly once, the scene a non-empty JSON object
  whose objects are exactly {id, bbox} with ids like `name.3` and 4-number boxes, relationships with string
  subject/predicate/object (ids like `name.3`), unique object ids. Order of tags is not checked.
- count: 1 - |Np - Ng| / max(Ng, 1) clipped at 0; with ground-truth relationships
  0.7 * that + 0.3 * the same for relationship counts.
- accuracy: case- and whitespace-insensitive equality of the `<answer>` contents.
- spatial: boxes normalised by the prompt's `Image size`; a Hungarian assignment
  (`scipy.optimize.linear_sum_assignment`) with cost 2 * (1 - label_sim) + (1 - mciou) on a matrix padded
  to at least G rows (padding cost 1e5, a ground-truth object assigned to padding is unmatched); the score is
  the sum of mciou over matched ground-truth objects divided by G. G == 0 gives 1.0, except that with no
  ground-truth relationships either, it is 1.0 only when nothing is predicted.

Departures from upstream (all but the last change behaviour only, never a number upstream computes):
- Upstream also runs a relationship-triplet matching whose result it discards; it is not computed here.
- Upstream crashes on a prompt without `Image size` (or with a zero size), on a malformed ground-truth box
  (only when it reaches the spatial term), and on non-finite predicted boxes. Here the first two raise
  ValueError for the batch layer to turn into a per-sample error (a malformed ground truth always, since it is
  a data error), and non-finite box pairs score 0 (see boxes.py).
- Each response's scene is parsed once, and a ground truth once per distinct text (the n samples of a group
  share it); upstream parses each up to three times.
- Tag extraction runs in linear time (see parsing.py).
- The one numeric departure: a matched pair's mciou counts at least 0. Upstream's mciou is negative only for
  degenerate boxes: down to about -0.25 for far, thin boxes of opposite aspect, and without bound for inverted
  boxes (x2 < x1 puts the centre outside the "enclosing" box, so rho2 / c2 explodes: an x1 ten image widths
  out gives about -600). Upstream would return such a spatial score, and with it an overall reward below 0
  that dominates its group's advantage normalisation; here spatial, like every component, stays in [0, 1].
  The matching is unchanged. `upstream_exact=True` (reward.upstream_exact, the score CLI's --upstream-exact,
  the service's `upstream_exact` input) restores upstream's value: the matched pair's mciou as it is, so
  spatial and overall may be below 0. Worked value (the spec's ground truth, bike.1 predicted exactly, man.1 at
  the inverted [640, 165, 0, 166], whose mciou is -1.873816): spatial (0.9999997 - 1.873816) / 2 = -0.4369082
  and overall 0.7126184 upstream-exact; spatial 0.9999997 / 2 = 0.49999986 and overall 0.9 floored. The spec's
  own worked values are the same in both modes (tests/unit/reward/test_upstream_exact.py).

Bounds on one sample's cost (both modes; no realistic scene comes near them, so no realistic score moves):
- Only the first MAX_MATCHED_OBJECTS (256) predicted objects enter the box matching (the count reward still
  counts all of them); a ground truth with more objects is a per-sample error (a data error). The matching
  is thus at most 256 x 256 pairs (~65,000 label comparisons and mciou values) where 10,000 x 2,000 boxes
  took 51 s and 2.1 GB before. STVQA-7K's scenes have a handful of objects.
- A scene block over parsing.MAX_SCENE_CHARS (1,000,000 characters) is invalid in a response (format 0) and a
  per-sample error in a ground truth, so parsing, the one step that cannot be cut off, stays under ~0.3 s.
- `deadline` (a `time.thread_time()` value; RewardScorer sets it from its per-sample CPU budget) is checked
  after each stage and on every row of the matching of a sample with over CHECKED_TEXT_CHARS (20,000)
  characters of response and ground truth: past it, ScoringTimeout, which the batch layer turns into reward
  0 with an error. Smaller samples cost milliseconds at most (the batch layer still checks their time once,
  at the end); reading the thread's clock costs ~3 us, 1% of a usual sample, so it is read only where needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from nemo_spatial.reward.boxes import Box, mciou_rows
from nemo_spatial.reward.parsing import (
    MAX_SCENE_CHARS,
    box_as_floats,
    extract_answer,
    first_block,
    is_valid_object,
    is_valid_relation,
    label_of,
    parse_image_size,
    parse_scene,
)
from nemo_spatial.reward.similarity import LabelSimilarity

WEIGHTS = {"format": 0.1, "count": 0.2, "accuracy": 0.5, "spatial": 0.2}
TAGS = ("observe", "think", "scene", "answer")
LABEL_WEIGHT = 2.0
BOX_WEIGHT = 1.0
PADDING_COST = 1e5
MAX_MATCHED_OBJECTS = 256  # predicted objects matched, and ground-truth objects allowed (see the docstring)
CHECKED_TEXT_CHARS = 20_000  # samples with more text than this check their deadline inside the loops


class ScoringTimeout(RuntimeError):
    """The sample used up its CPU-time budget before its score was complete."""


def check_deadline(deadline: float | None, stage: str) -> None:
    """Raise ScoringTimeout when the thread's CPU time is past `deadline` (None: no budget)."""
    if deadline is not None and time.thread_time() > deadline:
        raise ScoringTimeout(f"the sample's scoring time budget ran out during {stage}")


@dataclass(frozen=True)
class Components:
    """One sample's reward and its parts, each in [0, 1] (with upstream_exact, spatial and overall can be < 0)."""

    overall: float
    format: float
    count: float
    accuracy: float
    spatial: float


@dataclass(frozen=True)
class GroundTruth:
    """A parsed `answer_option_text`: its scene (read-only), answer, and object boxes (pixels) and labels."""

    scene: dict[str, Any]
    answer: str
    boxes: tuple[Box, ...]
    labels: tuple[str, ...]


def score(
    response: str,
    ground_truth: str,
    problem: str,
    similarity: LabelSimilarity,
    upstream_exact: bool = False,
    deadline: float | None = None,
) -> Components:
    """The reward of one response. Raises ValueError for an unusable prompt or ground truth, ScoringTimeout
    past `deadline` (thread CPU time). `upstream_exact`: matched mciou values are not floored at 0."""
    if len(response) + len(ground_truth) <= CHECKED_TEXT_CHARS:
        deadline = None  # cheap by construction: reading the clock (~3 us) would cost more than it guards
    width, height = parse_image_size(problem)
    gt = parse_ground_truth(ground_truth)
    check_deadline(deadline, "parsing the ground truth")
    fmt, pred_scene = format_and_scene(response)
    check_deadline(deadline, "parsing the response")
    count = accuracy = spatial = 0.0
    if fmt == 1.0:
        count = count_reward(pred_scene, gt.scene)
        accuracy = accuracy_reward(extract_answer(response), gt.answer)
        if accuracy == 1.0:
            spatial = spatial_reward(pred_scene, gt, width, height, similarity, upstream_exact, deadline)
    overall = (
        fmt * WEIGHTS["format"]
        + count * WEIGHTS["count"]
        + accuracy * WEIGHTS["accuracy"]
        + spatial * WEIGHTS["spatial"]
    )
    return Components(overall=overall, format=fmt, count=count, accuracy=accuracy, spatial=spatial)


@lru_cache(maxsize=4096)
def parse_ground_truth(text: str) -> GroundTruth:
    """Parse once per distinct ground truth; raises ValueError for objects without a usable id and box."""
    block = first_block(text, "scene")
    if block is not None and len(block) > MAX_SCENE_CHARS:
        raise ValueError(f"ground-truth scene has {len(block)} characters, over the reward's cap of {MAX_SCENE_CHARS}")
    scene = parse_scene(text)
    objects = scene.get("objects")
    objects = objects if isinstance(objects, list) else []
    if len(objects) > MAX_MATCHED_OBJECTS:
        raise ValueError(
            f"ground truth has {len(objects)} objects, over the reward's cap of {MAX_MATCHED_OBJECTS} "
            "(spatialthinker.MAX_MATCHED_OBJECTS); no STVQA scene has that many"
        )
    boxes = tuple(_ground_truth_box(obj) for obj in objects)
    labels = tuple(label_of(str(obj["id"])) for obj in objects)
    return GroundTruth(scene=scene, answer=extract_answer(text), boxes=boxes, labels=labels)


def format_and_scene(text: str) -> tuple[float, dict[str, Any]]:
    """The format reward and the parsed scene (`{}` when absent or invalid)."""
    if any(first_block(text, tag) is None for tag in TAGS):
        return 0.0, {}
    scene = parse_scene(text)
    if any(text.count(f"<{tag}>") != 1 for tag in TAGS) or not scene:
        return 0.0, scene
    objects, relations = scene.get("objects", []), scene.get("relationships", [])
    if not isinstance(objects, list) or not isinstance(relations, list):
        return 0.0, scene
    if not all(map(is_valid_object, objects)) or not all(map(is_valid_relation, relations)):
        return 0.0, scene
    ids = [obj["id"] for obj in objects]
    return (1.0 if len(ids) == len(set(ids)) else 0.0), scene


def format_reward(text: str) -> float:
    """1.0 when the response has the four blocks once each and a well-formed scene graph, else 0.0."""
    return format_and_scene(text)[0]


def accuracy_reward(pred_answer: str, gt_answer: str) -> float:
    return float(pred_answer.strip().lower() == gt_answer.strip().lower())


def count_reward(pred_scene: dict[str, Any], gt_scene: dict[str, Any]) -> float:
    """How close the numbers of objects (and relationships, when the ground truth has some) are."""
    pred_objects, gt_objects = pred_scene.get("objects"), gt_scene.get("objects")
    if not isinstance(pred_objects, list) or not isinstance(gt_objects, list):
        return 0.0
    object_score = _count_closeness(len(pred_objects), len(gt_objects))
    gt_relations = _list_or_empty(gt_scene, "relationships")
    if not gt_relations:
        return object_score
    pred_relations = _list_or_empty(pred_scene, "relationships")
    return object_score * 0.7 + _count_closeness(len(pred_relations), len(gt_relations)) * 0.3


def _count_closeness(predicted: int, expected: int) -> float:
    return max(0.0, 1 - abs(predicted - expected) / max(expected, 1))


def _list_or_empty(scene: dict[str, Any], key: str) -> list[Any]:
    """`scene.get(key) or []` as upstream, refusing a non-list that upstream would measure with len()."""
    value = scene.get(key) or []
    if not isinstance(value, list):
        raise ValueError(f"scene {key!r} is a {type(value).__name__}, not a list")
    return value


def spatial_reward(
    pred_scene: dict[str, Any],
    gt: GroundTruth,
    width: int,
    height: int,
    similarity: LabelSimilarity,
    upstream_exact: bool = False,
    deadline: float | None = None,
) -> float:
    """Box quality of the matched objects; the prediction is assumed to have passed the format check."""
    pred_objects = pred_scene.get("objects") or []
    if not isinstance(gt.scene.get("objects") or [], list) or not isinstance(pred_objects, list):
        return 0.0
    if not _list_or_empty(gt.scene, "relationships") and not gt.boxes:
        return 1.0 if not pred_objects else 0.0
    return object_score(gt, pred_objects, width, height, similarity, upstream_exact, deadline)


def object_score(
    gt: GroundTruth,
    pred_objects: list[dict[str, Any]],
    width: int,
    height: int,
    similarity: LabelSimilarity,
    upstream_exact: bool = False,
    deadline: float | None = None,
) -> float:
    """Sum of mciou (at least 0 each unless `upstream_exact`) over Hungarian-matched ground-truth objects / their
    number (1.0 if none). Only the first MAX_MATCHED_OBJECTS predicted objects are matched."""
    if not gt.boxes:
        return 1.0
    per_gt = [0.0] * len(gt.boxes)
    for gt_index, _, score in match_objects(gt, pred_objects, width, height, similarity, upstream_exact, deadline):
        per_gt[gt_index] = score
    return sum(per_gt) / len(gt.boxes)


def match_objects(
    gt: GroundTruth,
    pred_objects: list[dict[str, Any]],
    width: int,
    height: int,
    similarity: LabelSimilarity,
    upstream_exact: bool = False,
    deadline: float | None = None,
) -> list[tuple[int, int, float]]:
    """The spatial term's Hungarian assignment: (ground-truth index, predicted index, mciou) per pair, the mciou
    floored at 0 unless `upstream_exact`. Only the first MAX_MATCHED_OBJECTS predicted objects are matched.

    A ground-truth object assigned to padding (more ground truth than predictions) has no pair. The cost matrix
    is built from Python floats, with numpy's float64 operations in numpy's order, so it is the matrix upstream
    hands the solver bit for bit; building it with numpy cost more than the arithmetic on the usual 2-6 x 2-6
    matrices. Also used by the rollout viewer (nemo_spatial.report) to draw the pairs.
    """
    if not gt.boxes or not pred_objects:
        return []  # with predictions absent, every ground-truth object is assigned to padding
    pred_objects = pred_objects[:MAX_MATCHED_OBJECTS]
    scale_x, scale_y = 1.0 / width, 1.0 / height
    gt_boxes = [_scaled(box, scale_x, scale_y) for box in gt.boxes]
    pred_boxes = [_scaled(box_as_floats(obj["bbox"]), scale_x, scale_y) for obj in pred_objects]
    mciou = mciou_rows(gt_boxes, pred_boxes)  # P rows of G
    check_deadline(deadline, "the box overlaps")
    pred_labels = [label_of(obj["id"]) for obj in pred_objects]
    cost = []
    for p, row in zip(pred_labels, mciou, strict=True):
        cost.append(
            [
                LABEL_WEIGHT * (1.0 - float(similarity(g, p))) + BOX_WEIGHT * (1.0 - box)
                for g, box in zip(gt.labels, row, strict=True)
            ]
        )
        check_deadline(deadline, "the label similarities")
    n_gt = len(gt_boxes)
    cost.extend([PADDING_COST] * n_gt for _ in range(n_gt - len(cost)))  # at least G rows
    rows, cols = linear_sum_assignment(np.array(cost, dtype=np.float64))
    return [
        (int(col), int(row), mciou[row][col] if upstream_exact else max(0.0, mciou[row][col]))
        for row, col in zip(rows, cols, strict=True)
        if row < len(mciou)
    ]


def _ground_truth_box(obj: object) -> Box:
    if not isinstance(obj, dict) or "id" not in obj or "bbox" not in obj:
        raise ValueError(f"ground-truth object {str(obj)[:80]} needs 'id' and 'bbox'")
    return box_as_floats(obj["bbox"])


def _scaled(box: Box, sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
