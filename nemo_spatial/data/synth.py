"""Synthetic STVQA-format data: rendered shapes, their scene graph, and questions decidable from the image.

    python -m nemo_spatial.data.synth --out DIR --n 64 [--n-val 8] [--seed 0] [--sft-targets]
    -> DIR/train-00000-of-00001.parquet, DIR/val-00000-of-00001.parquet (STVQA-7K's 15 columns)
       and with --sft-targets DIR/{train,val}-sft.jsonl: each row's perfect response (data/sft_target.py), the
       text `python -m nemo_spatial.sft` trains on (it builds the same text from the ground truth itself)

What it computes: row i of a split draws a scene from `numpy.random.default_rng([seed, split_id, i])`
(synth_scene.py), asks one question of category `CATEGORIES[i % 9]` (STVQA's nine, so the categories are
balanced as in STVQA-7K), and writes the row as upstream's generator does: `question_with_options`,
`problem` = the SpatialThinker prefix with the true `Image size: (W x H)` + "\\nQ. " + question_with_options,
`answer*` columns with `<scene>{json.dumps(filtered scene graph)}</scene>\\n<answer>...</answer>`, the image
as JPEG bytes (quality 95). The filtered scene graph holds the objects the question names and the relation
it asks about, as STVQA filters Visual Genome's graph; boxes are tight pixel boxes of the drawn shapes.
Categories (how the answer is decidable from the picture):
  relation           left of / right of / above / below: boxes clearly apart on the dominant axis
  reach              which shape touches the square (shares an edge with it), or none
  size               which of two shapes of one kind is bigger (side ratio >= 1.6) or the same size
  orientation        where a shape is from an arrow's point of view (it faces where it points)
  instance_location  which quadrant the shape's centre is in (away from the midlines)
  depth              which is closer to the camera: the shape drawn over (occluding) the other
  distance           which of two shapes is closer to a third (centre distances differ >= 1.6x)
  count              how many shapes of a kind (1-5)
  existence          yes/no: is there an X <relation> the Y (the relation true or its opposite)
Every question has 4 options except existence (yes/no, as STVQA). Options are shuffled by the row's generator.
The same (n, n_val, seed) gives byte-identical files for a given Pillow/pyarrow version.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo_spatial.data.prompts import question_with_options, spatialthinker_problem
from nemo_spatial.data.schema import CATEGORIES, STVQA_COLUMNS
from nemo_spatial.data.sft_target import sft_target
from nemo_spatial.data.synth_scene import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    Scene,
    Shape,
    boxes_apart,
    place,
    place_at,
    relation,
    relative_direction,
)
from nemo_spatial.fileio import atomic_write, staged_directory

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
LEVELS = {"orientation": "hard", "depth": "medium", "distance": "medium", "reach": "medium", "size": "medium"}
RATINGS = {"relation": 7, "reach": 7, "size": 6, "orientation": 9, "instance_location": 6, "depth": 8}
SPLIT_IDS = {"train": 0, "val": 1}
# Every box of a scene graph covers >= MIN_AREA_FRACTION of the image: the reward's IoU epsilon (1e-7 on
# normalised boxes) then costs a perfect response < 5e-7, so it scores 1.0 to 6 places (0.2 * 0.5e-7 / 0.021).
MIN_AREA_FRACTION = 0.021
SIZE_MIN = 0.17  # side / sqrt(W*H); a star's box is 0.86 side^2, a hexagon's 0.87 side^2: >= 0.0248 of the image


@dataclass
class Question:
    text: str
    options: list[str]  # option texts; the answer is options[answer]
    answer: int
    objects: list[Shape]  # the objects the question names (the filtered scene graph)
    relationships: list[dict[str, str]] = field(default_factory=list)


def _shuffled(rng: np.random.Generator, correct: str, others: list[str]) -> tuple[list[str], int]:
    options = [correct, *others]
    order = rng.permutation(len(options))
    shuffled = [options[i] for i in order]
    return shuffled, shuffled.index(correct)


def _rel(subject: Shape, predicate: str, obj: Shape) -> dict[str, str]:
    return {"subject": subject.id, "predicate": predicate, "object": obj.id}


def _new_scene(rng: np.random.Generator) -> Scene:
    return Scene(int(rng.integers(320, 513)), int(rng.integers(256, 385)))


def _size(rng: np.random.Generator, scene: Scene, low: float, high: float) -> int:
    """A side length between `low` and `high` times sqrt(W*H) (SIZE_MIN keeps boxes >= MIN_AREA_FRACTION)."""
    return int(np.sqrt(scene.width * scene.height) * rng.uniform(low, high))


def _fill(
    rng: np.random.Generator, scene: Scene, n: int, kinds: tuple[str, ...] = SHAPES, high: float = 0.26
) -> list[Shape]:
    """Add up to n shapes, each with a colour not yet in the scene."""
    added = []
    for _ in range(n):
        used = {s.colour for s in scene.shapes}
        colours = [c for c in COLOURS if c not in used and c != "black"]
        if not colours:
            break
        kind, colour = str(rng.choice(kinds)), str(rng.choice(colours))
        shape = place(rng, scene, kind, colour, _size(rng, scene, SIZE_MIN, high))
        if shape is not None:
            added.append(shape)
    return added


def _relation_pairs(scene: Scene) -> list[tuple[Shape, Shape, str]]:
    pairs = [(a, b, relation(a, b)) for a in scene.shapes for b in scene.shapes if a is not b]
    return [(a, b, r) for a, b, r in pairs if r is not None]


def q_relation(rng: np.random.Generator, scene: Scene) -> Question | None:
    _fill(rng, scene, int(rng.integers(2, 5)))
    pairs = _relation_pairs(scene)
    if not pairs:
        return None
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    options, answer = _shuffled(rng, rel, [r for r in OPPOSITE if r != rel])
    text = f"Where is the {a.name} with respect to the {b.name}?"
    return Question(text, options, answer, [a, b], [_rel(a, rel, b)])


def q_existence(rng: np.random.Generator, scene: Scene) -> Question | None:
    _fill(rng, scene, int(rng.integers(2, 5)))
    pairs = _relation_pairs(scene)
    if not pairs:
        return None
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    truth = bool(rng.integers(2))
    asked = rel if truth else OPPOSITE[rel]
    options, answer = _shuffled(rng, "yes" if truth else "no", ["no" if truth else "yes"])
    text = f"Is there a {a.name} {asked} the {b.name} in the picture?"
    return Question(text, options, answer, [a, b], [_rel(a, rel, b)])


def q_location(rng: np.random.Generator, scene: Scene) -> Question | None:
    _fill(rng, scene, int(rng.integers(1, 4)))
    for shape in scene.shapes:
        fx, fy = shape.centre[0] / scene.width, shape.centre[1] / scene.height
        if 0.38 < fx < 0.62 or 0.38 < fy < 0.62:
            continue
        where = f"{'top' if fy < 0.5 else 'bottom'} {'left' if fx < 0.5 else 'right'}"
        others = [f"{v} {h}" for v in ("top", "bottom") for h in ("left", "right") if f"{v} {h}" != where]
        options, answer = _shuffled(rng, where, others)
        return Question(f"In which part of the image is the {shape.name} located?", options, answer, [shape])
    return None


def q_count(rng: np.random.Generator, scene: Scene) -> Question | None:
    kind = str(rng.choice(SHAPES))
    count = int(rng.integers(1, 6))
    targets = _fill(rng, scene, count, kinds=(kind,), high=0.21)
    _fill(rng, scene, int(rng.integers(0, 2)), kinds=tuple(k for k in SHAPES if k != kind), high=0.21)
    if len(targets) != count:
        return None
    low = max(0, count - int(rng.integers(0, 3)))
    others = [str(n) for n in range(low, low + 5) if n != count][:3]
    options, answer = _shuffled(rng, str(count), others)
    return Question(f"How many {kind}s are there in the image?", options, answer, targets)


def _pair_options(rng: np.random.Generator, correct: str, other: str, equal: str, is_equal: bool) -> tuple:
    answer_text = equal if is_equal else correct
    rest = [x for x in (correct, other, equal, "neither of them") if x != answer_text]
    return _shuffled(rng, answer_text, rest)


def q_size(rng: np.random.Generator, scene: Scene) -> Question | None:
    # Both shapes of one kind, so the bigger box is also the one with more ink (a star fills less of its box).
    colours = [str(c) for c in rng.permutation([c for c in COLOURS if c != "black"])[:2]]
    kind = str(rng.choice(SHAPES))
    equal = bool(rng.integers(3) == 0)
    small_side, big_side = _size(rng, scene, SIZE_MIN, 0.2), _size(rng, scene, 0.33, 0.42)  # differ >= 1.6x
    sizes = [_size(rng, scene, SIZE_MIN, 0.3)] * 2 if equal else [small_side, big_side]
    order = rng.permutation(2)
    a = place(rng, scene, kind, colours[0], sizes[order[0]], gap=20)
    b = place(rng, scene, kind, colours[1], sizes[order[1]], gap=20)
    if a is None or b is None:
        return None
    _fill(rng, scene, int(rng.integers(0, 2)))
    big, small = (a, b) if a.area >= b.area else (b, a)
    options, answer = _pair_options(rng, big.name, small.name, "they are the same size", equal)
    rel = _rel(a, "same size as", b) if equal else _rel(big, "bigger than", small)
    return Question(f"Which is bigger, the {a.name} or the {b.name}?", options, answer, [a, b], [rel])


def q_depth(rng: np.random.Generator, scene: Scene) -> Question | None:
    colours = [str(c) for c in rng.permutation([c for c in COLOURS if c != "black"])[:2]]
    back = place(rng, scene, str(rng.choice(SHAPES)), colours[0], _size(rng, scene, 0.22, 0.35), gap=30)
    if back is None:
        return None
    size = _size(rng, scene, SIZE_MIN, 0.28)
    angle = float(rng.uniform(0, 2 * np.pi))
    offset = 0.45 * (size + back.box[2] - back.box[0]) / 2  # the front shape covers part of the back one
    cx, cy = back.centre[0] + offset * np.cos(angle), back.centre[1] + offset * np.sin(angle)
    front = place_at(scene, str(rng.choice(SHAPES)), colours[1], cx, cy, size)  # drawn after `back`: in front
    if front is None or _visible_fraction(scene, back) > 0.85:  # the occlusion must be plain to see
        return None
    _fill(rng, scene, int(rng.integers(0, 2)))
    first, second = (front, back) if rng.integers(2) else (back, front)
    options, answer = _pair_options(rng, front.name, back.name, "they are at the same distance", False)
    text = f"Which is closer to the camera, the {first.name} or the {second.name}?"
    return Question(text, options, answer, [front, back], [_rel(front, "in front of", back)])


def _visible_fraction(scene: Scene, shape: Shape) -> float:
    """The share of `shape`'s pixels that the shapes drawn after it leave visible."""
    alone = Scene(scene.width, scene.height, [shape])
    colour = np.array(COLOURS[shape.colour])
    full = (np.asarray(alone.render()) == colour).all(-1).sum()
    return float((np.asarray(scene.render()) == colour).all(-1).sum() / max(full, 1))


def q_distance(rng: np.random.Generator, scene: Scene) -> Question | None:
    shapes = _fill(rng, scene, 3)
    if len(shapes) < 3:
        return None
    ref, b, c = shapes
    dist = [float(np.hypot(s.centre[0] - ref.centre[0], s.centre[1] - ref.centre[1])) for s in (b, c)]
    if max(dist) < 1.6 * min(dist):
        return None
    near, far = (b, c) if dist[0] < dist[1] else (c, b)
    options, answer = _pair_options(rng, near.name, far.name, "they are equally close", False)
    text = f"Which object is closer to the {ref.name}, the {b.name} or the {c.name}?"
    return Question(text, options, answer, [ref, b, c], [_rel(near, "closer to", ref)])


def q_orientation(rng: np.random.Generator, scene: Scene) -> Question | None:
    direction = str(rng.choice(list(DIRECTIONS)))
    arrow = place(rng, scene, "arrow", "black", _size(rng, scene, 0.2, 0.3), gap=20, direction=direction)
    target = _fill(rng, scene, 1)
    if arrow is None or not target:
        return None
    where = relative_direction(arrow, target[0])
    if where is None:
        return None
    _fill(rng, scene, int(rng.integers(0, 2)))
    others = [d for d in ("in front", "behind", "to the left", "to the right") if d != where]
    options, answer = _shuffled(rng, where, others)
    text = f"From the arrow's perspective, which direction is the {target[0].name}?"
    predicate = {"in front": "in front of", "behind": "behind"}.get(where, f"{where} of")
    return Question(text, options, answer, [arrow, target[0]], [_rel(target[0], predicate, arrow)])


def q_reach(rng: np.random.Generator, scene: Scene) -> Question | None:
    base = place(rng, scene, "square", "black", _size(rng, scene, 0.2, 0.28), gap=40)
    if base is None:
        return None
    touching = bool(rng.integers(4))
    size = _size(rng, scene, SIZE_MIN, 0.24)
    x1, y1, x2, y2 = base.box
    side = int(rng.integers(4))
    centres = [(x2 + size / 2, (y1 + y2) / 2), (x1 - size / 2, (y1 + y2) / 2)]
    centres += [((x1 + x2) / 2, y1 - size / 2), ((x1 + x2) / 2, y2 + size / 2)]
    colour = str(rng.choice([c for c in COLOURS if c != "black"]))
    toucher = place_at(scene, "square", colour, *centres[side], size) if touching else None
    if touching and toucher is None:
        return None
    others = _fill(rng, scene, 3 - int(touching), kinds=("circle", "triangle", "star", "diamond", "hexagon"), high=0.2)
    if len(others) != 3 - int(touching) or any(not boxes_apart(o.box, base.box, 25) for o in others):
        return None
    choices = [s.name for s in scene.shapes if s is not base] + ["none of them"]  # 4 in both cases
    answer_text = toucher.name if toucher is not None else "none of them"
    options, answer = _shuffled(rng, answer_text, [c for c in choices if c != answer_text])
    rels = [_rel(toucher, "touching", base)] if toucher is not None else []
    objects = [base, toucher] if toucher is not None else [base]
    return Question(f"Which object is touching the {base.name}?", options, answer, objects, rels)


BUILDERS: dict[str, Callable[[np.random.Generator, Scene], Question | None]] = {
    "relation": q_relation,
    "reach": q_reach,
    "size": q_size,
    "orientation": q_orientation,
    "instance_location": q_location,
    "depth": q_depth,
    "distance": q_distance,
    "count": q_count,
    "existence": q_existence,
}
assert tuple(BUILDERS) == CATEGORIES


def make_question(seed: int, split: str, index: int) -> tuple[Scene, Question, str]:
    """The scene and question of row `index` of `split` (a pure function of its arguments)."""
    category = CATEGORIES[index % len(CATEGORIES)]
    for attempt in range(200):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], index, attempt])
        scene = _new_scene(rng)
        question = BUILDERS[category](rng, scene)
        area = scene.width * scene.height
        if question is not None and all(o.area >= MIN_AREA_FRACTION * area for o in question.objects):
            return scene, question, category
    raise RuntimeError(f"no {category} scene found for row {index} of {split} (seed {seed}) in 200 attempts")


def make_row(seed: int, split: str, index: int) -> dict[str, Any]:
    """One row with STVQA-7K's columns."""
    scene, q, category = make_question(seed, split, index)
    graph = {"objects": [{"id": o.id, "bbox": o.box} for o in q.objects], "relationships": q.relationships}
    scene_tag = f"<scene>{json.dumps(graph)}</scene>\n"
    letter, text = chr(ord("A") + q.answer), q.options[q.answer]
    with_options = question_with_options(q.text, q.options)
    buffer = io.BytesIO()
    scene.render().save(buffer, format="JPEG", quality=95)
    row = {
        "image_id": f"synthetic-{seed}-{split}-{index:06d}",
        "images": {"bytes": buffer.getvalue(), "path": None},
        "problem": spatialthinker_problem(with_options, scene.width, scene.height),
        "question_only": q.text,
        "question_with_options": with_options,
        "options": list(q.options),
        "answer": f"{scene_tag}<answer>{letter}</answer>",
        "answer_only": letter,
        "answer_text": f"{scene_tag}<answer>{text}</answer>",
        "answer_text_only": text,
        "answer_option_text": f"{scene_tag}<answer>({letter}) {text}</answer>",
        "answer_option_text_only": f"({letter}) {text}",
        "category": category,
        "level": LEVELS.get(category, "easy"),
        "rating": RATINGS.get(category, 5),
    }
    assert tuple(row) == STVQA_COLUMNS
    return row


def features() -> Any:
    import datasets

    string = datasets.Value("string")
    columns: dict[str, Any] = {name: string for name in STVQA_COLUMNS}
    columns |= {"images": datasets.Image(), "options": datasets.List(string), "rating": datasets.Value("int32")}
    return datasets.Features(columns)


def write_split(out_dir: Path, split: str, rows: int, seed: int) -> Path:
    """Write `rows` rows of `split` to out_dir/{split}-00000-of-00001.parquet."""
    import datasets
    from tqdm import tqdm

    data = [make_row(seed, split, i) for i in tqdm(range(rows), desc=f"synthetic {split}", disable=rows < 200)]
    path = out_dir / f"{split}-00000-of-00001.parquet"
    datasets.Dataset.from_list(data, features=features()).to_parquet(str(path))
    return path


def default_val_rows(train_rows: int) -> int:
    return max(4, train_rows // 8)


def write_dataset(out_dir: str | Path, rows: int, seed: int = 0, val_rows: int | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_split(out, "train", rows, seed)
    write_split(out, "val", default_val_rows(rows) if val_rows is None else val_rows, seed)
    return out


def ensure_synthetic(root: Path, split: str, rows: int, seed: int) -> Path:
    """A directory holding `rows` rows of `split` (spec `synthetic:rows:seed@split`), generated once, atomically."""
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic data has the splits {', '.join(SPLIT_IDS)}, not {split!r}")
    final = root / f"{split}-n{rows}-seed{seed}"
    if (final / "COMPLETE").is_file():
        return final
    try:
        with staged_directory(final) as staging:
            write_split(staging, split, rows, seed)
            (staging / "COMPLETE").write_text("")
    except OSError:  # another process finished first: use its copy (the same bytes)
        if not (final / "COMPLETE").is_file():
            raise
    return final


def oracle_response(ground_truth: str) -> str:
    """A response in SpatialThinker's 4-tag format that restates the ground truth (reward 1.0): the SFT target."""
    return sft_target(ground_truth)


def write_sft_targets(out_dir: Path, split: str, rows: int, seed: int) -> Path:
    """out_dir/{split}-sft.jsonl: per row {"image_id", "problem", "ground_truth", "target"} (the SFT target)."""
    path = out_dir / f"{split}-sft.jsonl"
    with atomic_write(path) as handle:
        for i in range(rows):
            row = make_row(seed, split, i)
            record = {"image_id": row["image_id"], "problem": row["problem"]}
            record |= {"ground_truth": row["answer_option_text"], "target": sft_target(row["answer_option_text"])}
            handle.write(json.dumps(record) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic STVQA-format data (train and val parquet).")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--n", type=int, required=True, help="train rows")
    parser.add_argument("--n-val", type=int, default=None, help="val rows (default max(4, n // 8))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sft-targets", action="store_true", help="also write {split}-sft.jsonl: each row's perfect response"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or (args.n_val is not None and args.n_val < 1):
        parser.error("--n and --n-val must be >= 1")
    out = write_dataset(args.out, args.n, args.seed, args.n_val)
    print(f"wrote {out}/train-00000-of-00001.parquet and {out}/val-00000-of-00001.parquet")
    if args.sft_targets:
        for split, rows in (("train", args.n), ("val", default_val_rows(args.n) if args.n_val is None else args.n_val)):
            print(f"wrote {write_sft_targets(out, split, rows, args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
