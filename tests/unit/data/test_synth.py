"""Synthetic STVQA-format data: STVQA's columns, deterministic files, answers decidable from the pixels, reward 1.0."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nemo_spatial.data.prompts import question_with_options, spatialthinker_problem
from nemo_spatial.data.schema import CATEGORIES, STVQA_COLUMNS
from nemo_spatial.data.synth import main, oracle_response, write_dataset
from nemo_spatial.data.synth_scene import BACKGROUND, COLOURS
from nemo_spatial.reward import RewardSample, RewardScorer

ID = re.compile(r"^[a-zA-Z_]+\.\d+$")


@pytest.fixture(scope="module")
def rows(synth_dir: Path) -> list[dict]:
    files = ["train-00000-of-00001.parquet", "val-00000-of-00001.parquet"]
    return [row for name in files for row in pq.read_table(synth_dir / name).to_pylist()]


def _scene(row: dict) -> dict:
    return json.loads(re.search(r"<scene>(.*?)</scene>", row["answer_option_text"]).group(1))


def _image(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["images"]["bytes"])).convert("RGB")).astype(int)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path, synth_dir: Path) -> None:
    again = write_dataset(tmp_path / "a", rows=18, seed=0, val_rows=9)
    for name in ("train-00000-of-00001.parquet", "val-00000-of-00001.parquet"):
        assert (again / name).read_bytes() == (synth_dir / name).read_bytes()
    other = write_dataset(tmp_path / "b", rows=18, seed=1, val_rows=9)
    assert (other / "train-00000-of-00001.parquet").read_bytes() != (
        synth_dir / "train-00000-of-00001.parquet"
    ).read_bytes()


def test_columns_are_stvqas_and_consistent(rows: list[dict]) -> None:
    assert all(tuple(row) == STVQA_COLUMNS for row in rows)
    assert Counter(row["category"] for row in rows) == dict.fromkeys(CATEGORIES, 3)  # balanced, as STVQA-7K
    for row in rows:
        options = row["options"]
        assert len(options) == (2 if row["category"] == "existence" else 4) and len(set(options)) == len(options)
        letter = row["answer_only"]
        text = options[ord(letter) - ord("A")]
        tag = row["answer"].split("<answer>")[0]
        assert row["answer"] == f"{tag}<answer>{letter}</answer>"
        assert row["answer_text"] == f"{tag}<answer>{text}</answer>" and row["answer_text_only"] == text
        assert row["answer_option_text"] == f"{tag}<answer>({letter}) {text}</answer>"
        assert row["answer_option_text_only"] == f"({letter}) {text}"
        assert row["question_with_options"] == question_with_options(row["question_only"], options)
        height, width = _image(row).shape[:2]
        assert row["problem"] == spatialthinker_problem(row["question_with_options"], width, height)
        assert row["level"] in ("easy", "medium", "hard") and isinstance(row["rating"], int)


def test_scene_graphs_are_valid_and_inside_the_image(rows: list[dict]) -> None:
    for row in rows:
        scene, (height, width) = _scene(row), _image(row).shape[:2]
        ids = [o["id"] for o in scene["objects"]]
        assert ids and len(set(ids)) == len(ids) and all(ID.match(i) for i in ids)
        for obj in scene["objects"]:
            x1, y1, x2, y2 = obj["bbox"]
            assert 0 <= x1 < x2 < width and 0 <= y1 < y2 < height and set(obj) == {"id", "bbox"}
        for rel in scene["relationships"]:
            assert rel["subject"] in ids and rel["object"] in ids and rel["predicate"]


# --- the answers follow from the pixels ------------------------------------------------------------------


def _mask(image: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(image - np.array(COLOURS[colour])).sum(-1) < 60


def _blob(image: np.ndarray, name: str) -> tuple[np.ndarray, list[int]]:
    mask = _mask(image, name.split()[0] if name != "arrow" else "black")
    ys, xs = np.nonzero(mask)
    assert len(xs) > 50, name
    return mask, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _centre(box: list[int]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _names(question: str) -> list[str]:
    colours = "|".join(c for c in COLOURS if c != "black")
    return re.findall(rf"((?:{colours}) [a-z]+|arrow)", question)


def _check_relation(image, row, names, answer) -> None:
    (_, a), (_, b) = _blob(image, names[0]), _blob(image, names[1])
    d = _centre(a) - _centre(b)
    horizontal = abs(d[0]) > abs(d[1])
    truth = ("left of" if d[0] < 0 else "right of") if horizontal else ("above" if d[1] < 0 else "below")
    if row["category"] == "existence":
        asked = re.search(r"(left of|right of|above|below) the", row["question_only"]).group(1)
        assert answer == ("yes" if asked == truth else "no")
    else:
        assert answer == truth


def _check(row: dict) -> None:
    image, answer, names = _image(row), row["answer_text_only"], _names(row["question_only"])
    category = row["category"]
    if category in ("relation", "existence"):
        _check_relation(image, row, names, answer)
    elif category == "instance_location":
        cx, cy = _centre(_blob(image, names[0])[1]) / np.array(image.shape[1::-1])
        assert answer == f"{'top' if cy < 0.5 else 'bottom'} {'left' if cx < 0.5 else 'right'}"
    elif category == "size":
        areas = [_blob(image, n)[0].sum() for n in names]
        same = max(areas) < 1.15 * min(areas)
        assert answer == ("they are the same size" if same else names[int(np.argmax(areas))])
    elif category == "distance":
        ref, b, c = (_centre(_blob(image, n)[1]) for n in names)
        assert answer == names[1 + int(np.linalg.norm(c - ref) < np.linalg.norm(b - ref))]
    elif category == "depth":  # the front shape is whole; the other one is partly hidden behind it
        fractions = [_visible_fraction(image, name, _scene(row)) for name in names]
        assert answer == names[int(np.argmax(fractions))] and abs(fractions[0] - fractions[1]) > 0.08
    elif category == "orientation":
        mask, box = _blob(image, "arrow")
        ys, xs = np.nonzero(mask)
        offset = np.array([xs.mean(), ys.mean()]) - _centre(box)  # the head holds more ink than the shaft
        axis = int(abs(offset[1]) > abs(offset[0]))
        facing = np.zeros(2)
        facing[axis] = np.sign(offset[axis])
        v = _centre(_blob(image, names[1])[1]) - _centre(box)
        front, left = v @ facing, v[0] * facing[1] - v[1] * facing[0]
        truth = (
            ("in front" if front > 0 else "behind")
            if abs(front) > abs(left)
            else ("to the left" if left > 0 else "to the right")
        )
        assert answer == truth
    elif category == "reach":
        base = _blob(image, "black square")[1]
        touching = [o for o in row["options"] if o != "none of them" and _gap(_blob(image, o)[1], base) <= 4]
        assert [answer] == (touching or ["none of them"])
    elif category == "count":
        assert int(answer) == len(_scene(row)["objects"])
        background = np.abs(image - np.array(BACKGROUND)).sum(-1) > 60
        for obj in _scene(row)["objects"]:
            x, y = (int(v) for v in _centre(obj["bbox"]))
            assert background[y, x]  # every counted shape is drawn where its box says


FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "diamond": 0.5, "hexagon": 0.75, "star": 0.384}


def _visible_fraction(image: np.ndarray, name: str, scene: dict) -> float:
    """Pixels of the shape's colour / the ink its kind would have in its box (the box the pixels fit best)."""
    mask, seen = _blob(image, name)
    kind = name.split()[1]
    boxes = [o["bbox"] for o in scene["objects"] if o["id"].split(".")[0] == kind]
    box = min(boxes, key=lambda b: np.abs(np.array(b) - np.array(seen)).sum())
    return float(mask.sum() / (FILL[kind] * (box[2] - box[0]) * (box[3] - box[1])))


def _gap(a: list[int], b: list[int]) -> int:
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def test_every_answer_is_decidable_from_the_image(rows: list[dict]) -> None:
    for row in rows:
        _check(row)


def test_boxes_match_the_pixels_of_unoccluded_shapes(rows: list[dict]) -> None:
    checked = 0
    for row in rows:
        if row["category"] == "depth":  # the back shape is partly hidden: its pixels span less than its box
            continue
        image, boxes = _image(row), [np.array(o["bbox"]) for o in _scene(row)["objects"]]
        for name in _names(row["question_only"]):
            seen = np.array(_blob(image, name)[1])
            # within 4 px: JPEG softens edges and the thin tips of stars fall under the colour threshold
            assert min(np.abs(seen - box).max() for box in boxes) <= 4, (row["image_id"], name)
            checked += 1
    assert checked >= 30


# --- round trip through the reward -------------------------------------------------------------------------


def test_a_perfect_response_scores_one(rows: list[dict]) -> None:
    scorer = RewardScorer("spatialthinker", similarity="trigram")
    samples = [
        RewardSample(oracle_response(r["answer_option_text"]), r["answer_option_text"], r["problem"]) for r in rows
    ]
    batch = scorer.score_batch(samples)
    assert batch.n_errors == 0
    assert all(round(result.overall, 6) == 1.0 for result in batch.results)
    wrong = [r["answer_option_text"].replace(f"({r['answer_only']})", "(Z)") for r in rows[:3]]
    worse = scorer.score_batch(
        [
            RewardSample(oracle_response(w), r["answer_option_text"], r["problem"])
            for w, r in zip(wrong, rows, strict=False)
        ]
    )
    assert all(result.accuracy == 0 and result.overall == pytest.approx(0.3) for result in worse.results)


def test_the_r1v_baseline_reward_on_its_ground_truth(rows: list[dict]) -> None:
    scorer = RewardScorer("r1v", similarity="trigram")
    gt = [r["answer_option_text_only"] for r in rows]
    batch = scorer.score_batch([RewardSample(f"<think>t</think> <answer>{g}</answer>", g, "") for g in gt])
    assert all(result.overall == 1.0 for result in batch.results)


def test_cli_writes_both_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "s"), "--n", "10", "--n-val", "2", "--seed", "4"]) == 0
    assert pq.read_metadata(tmp_path / "s" / "train-00000-of-00001.parquet").num_rows == 10
    assert pq.read_metadata(tmp_path / "s" / "val-00000-of-00001.parquet").num_rows == 2
    assert "wrote" in capsys.readouterr().out
