"""Fixture datasets in each benchmark's real schema, written in the hub's parquet layout (for tests, the
speed benchmark and trying the harness offline).

`write_fixtures(root, keys, n)` writes `root/<key>/` as `huggingface-cli download` would lay it out:
CV-Bench as `test_2d.parquet` / `test_3d.parquet` with the dataset card's `configs:` YAML naming them (the
real repository's layout), BLINK as `<Subtask>/val-00000-of-00001.parquet`, MindCube as
`tiny/combined-...`, the rest as `data/<split>-00000-of-00001.parquet`. Columns, types and gold forms follow
eval-spec sections 1 and 7: images as parquet image structs `{bytes, path}` (PNG), multi-image rows (BLINK
multi-view and jigsaw, RoboSpatial's depth image, MindCube's list of views), base64 text images
(MME-RealWorld), choices stored as a string of a list (SpatialReasonerEval), `(C)` / `C` / `(a)` / `1` golds,
free-form golds (SpatialBench, RealWorldQA). Images are random noise of a few sizes: the content is
meaningless, the shapes are real.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nemo_spatial.eval.benchmarks import BENCHMARKS, Benchmark

Row = dict[str, Any]


def png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_struct(seed: int, size: tuple[int, int] = (64, 48)) -> dict[str, Any]:
    return {"bytes": png(seed, size), "path": None}


def _options(i: int, n: int = 4) -> list[str]:
    return [str(v) for v in range(n + i % 2, i % 2, -1)][:n]


def _mcq_prompt(question: str, options: list[str]) -> str:
    lines = "\n".join(f"({chr(65 + k)}) {o}" for k, o in enumerate(options))
    return f"{question} Select from the following choices.\n{lines}"


def _cv(i: int, three_d: bool) -> Row:
    task = ("Distance", "Depth")[i % 2] if three_d else ("Count", "Relation")[i % 2]
    options = _options(i, 2 if three_d else 4)
    return {"idx": i, "type": "3D" if three_d else "2D", "task": task, "image": image_struct(i, (72, 56)),
            "question": f"How many objects #{i}?", "choices": options, "answer": f"({chr(65 + i % len(options))})",
            "prompt": _mcq_prompt(f"How many objects #{i}?", options),
            "source": "Omni3D" if three_d else ("ADE20K", "COCO")[i // 2 % 2], "source_dataset": "x",
            "source_filename": f"f{i}.jpg", "target_class": None, "target_size": None, "bbox": None}  # fmt: skip


def _blink(n_images: int) -> Callable[[int], Row]:
    def row(i: int) -> Row:
        options = ["yes", "no"] if n_images == 1 else ["left", "right"]
        images = {f"image_{k}": image_struct(100 * i + k) if k <= n_images else None for k in range(1, 5)}
        return {"idx": f"val_{i}", "question": f"Is it so #{i}?", "sub_task": "x", **images, "choices": options,
                "answer": f"({'AB'[i % 2]})", "prompt": _mcq_prompt(f"Is it so #{i}?", options),
                "explanation": ""}  # fmt: skip

    return row


def _letter_row(image_cols: tuple[str, ...], choices_col: str, task_col: str | None, tasks: tuple[str, ...],
                gold: Callable[[int], str], choices_as_string: bool = False) -> Callable[[int], Row]:  # fmt: skip
    def row(i: int) -> Row:
        options = _options(i)
        out: Row = {col: image_struct(10 * i + k) for k, col in enumerate(image_cols)}
        out.update(prompt=_mcq_prompt(f"Which one #{i}?", options), answer=gold(i))
        out[choices_col] = str(options) if choices_as_string else options
        if task_col:
            out[task_col] = tasks[i % len(tasks)]
        return out

    return row


def _3dsr(i: int) -> Row:
    row = _letter_row(("image",), "choices", "task", ("height", "location", "orientation", "multi_object"),
                      lambda k: "ABCD"[k % 4])(i)  # fmt: skip
    row["index"] = f"q{i // 2}-{i % 2}"  # two circular variants per question
    return row


def _stvqa(i: int) -> Row:
    options = ["behind", "in front of", "left of", "right of"]
    question = f"Where is the man #{i} with respect to the bike?"
    with_options = question + "\nOptions:\n" + "\n".join(f"({chr(65 + k)}) {o}" for k, o in enumerate(options))
    return {"image_id": f"vg{i}", "images": image_struct(i), "problem": "<image>...", "question_only": question,
            "question_with_options": with_options, "options": options, "answer": "<answer>B</answer>",
            "answer_only": "ABCD"[i % 4], "answer_text": options[i % 4], "category": ("relation", "depth")[i % 2],
            "level": "easy", "rating": 5}  # fmt: skip


def _hallusion(i: int) -> Row:
    return {"category": ("VD", "VS")[i % 2], "subcategory": "illusion", "visual_input": "1", "set_id": str(i // 4),
            "figure_id": str(i // 2 % 2), "sample_note": "", "question_id": str(i % 2), "question": f"Is it red #{i}?",
            "gt_answer_details": "", "gt_answer": str(i % 2), "filename": f"{i}.png",
            "image": image_struct(i)}  # fmt: skip


def _rwqa(i: int) -> Row:
    direct = "Please answer directly with only the letter of the correct option and nothing else."
    if i % 2:
        return {"image": image_struct(i), "question": f"How many cars #{i}?", "answer": str(i % 5)}
    question = f"Which way does the road turn #{i}?\n\nA. Left\nB. Right\nC. Straight\n\n{direct}"
    return {"image": image_struct(i), "question": question, "answer": "ABC"[i % 3]}


def _spatialbench(i: int) -> Row:
    category = ("existence", "reach", "size", "positional", "counting")[i % 5]
    answer = str(i % 4) if category == "counting" else ("Yes", "No")[i % 2]
    return {"image": image_struct(i), "text": f"Is there a cup #{i}", "answer": answer, "category": category}


def _mmvp(i: int) -> Row:
    return {
        "image": image_struct(i),
        "text": f"Is the door open? (a) Open (b) Closed #{i}",
        "label": ("(a)", "(b)")[i % 2],
    }


def _mmstar(i: int) -> Row:
    question = f"What is shown #{i}?\nOptions: A: a cat, B: a dog, C: a car, D: a tree"
    l2 = ("coarse perception", "instance reasoning", "math")[i % 3]
    return {"index": i, "question": question, "image": image_struct(i), "answer": "ABCD"[i % 4],
            "category": l2, "l2_category": f"{l2} / sub{i % 2}", "meta_info": {"source": "x"}}  # fmt: skip


def _vstar(i: int) -> Row:
    return {"image": image_struct(i, (160, 120)), "text": f"What color is the cup #{i}? (A) red (B) blue",
            "label": "AB"[i % 2], "category": ("direct_attributes", "relative_position")[i % 2],
            "question_id": f"sa_{i}"}  # fmt: skip


def _mme_rw(i: int) -> Row:
    options = [f"({chr(65 + k)}) option {k}" for k in range(5)]
    return {"index": f"mme{i}", "bytes": base64.b64encode(png(i)).decode(), "question": f"What is it #{i}?",
            "multi-choice options": options, "answer": "ABCDE"[i % 5],
            "category": ("Perception/Monitoring", "Reasoning/OCR")[i % 2], "l2-category": "x"}  # fmt: skip


def _mindcube(i: int) -> Row:
    setting = ("among", "around", "rotation")[i % 3]
    prompt = f"<image><image>Views of a scene #{i}. Which is behind the chair? A. table B. lamp C. sofa"
    return {"id": f"{setting}_{i:04d}", "category": [setting], "type": "x", "meta_info": [],
            "question": f"Which is behind the chair #{i}?", "images": [image_struct(7 * i), image_struct(7 * i + 1)],
            "input_prompt": prompt, "gt_answer": "ABC"[i % 3]}  # fmt: skip


ROWS: dict[str, Callable[[int], Row]] = {
    "blink-spatial": _blink(1), "blink-depth": _blink(1), "blink-object": _blink(1), "blink-counting": _blink(1),
    "blink-multi-view": _blink(2), "blink-jigsaw": _blink(3),
    "3dsrbench": _3dsr, "3dsrbench_full": _3dsr,
    "spatialreasoner": _letter_row(("image",), "choices", "task", ("Depth", "Distance"), lambda k: f"({'AB'[k % 2]})",
                                   choices_as_string=True),
    "robospatial": _letter_row(("image", "depth_image"), "options", "category", ("configuration", "compatibility"),
                               lambda k: "AB"[k % 2]),
    "robospatial_rgb": _letter_row(("image", "depth_image"), "options", "category",
                                   ("configuration", "compatibility"), lambda k: "AB"[k % 2]),
    "lego": _letter_row(("image",), "choices", "category", ("height", "rotation"), lambda k: "ABCD"[k % 4]),
    "stvqa": _stvqa, "hallusionbench": _hallusion, "realworld_qa": _rwqa, "spatialbench": _spatialbench,
    "mmvp": _mmvp, "mmstar": _mmstar, "vstar": _vstar, "mme-realworld-lite": _mme_rw, "mindcube-tiny": _mindcube,
}  # fmt: skip

CV_CARD = """---
configs:
- config_name: default
  data_files:
  - split: test
    path: ["test_2d.parquet", "test_3d.parquet"]
- config_name: 2D
  data_files:
  - split: test
    path: test_2d.parquet
- config_name: 3D
  data_files:
  - split: test
    path: test_3d.parquet
---
# CV-Bench (fixture)
"""


def _write(path: Path, rows: list[Row]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_fixture(root: Path, bench: Benchmark, n: int = 8) -> Path:
    """`root/<key>/` holding n rows of this benchmark in the hub's layout; returns that folder."""
    folder = root / bench.key
    if bench.hub_id == "nyu-visionx/CV-Bench":
        _write(folder / "test_2d.parquet", [_cv(i, False) for i in range(n)])
        _write(folder / "test_3d.parquet", [_cv(n + i, True) for i in range(n)])
        (folder / "README.md").write_text(CV_CARD)
        return folder
    rows = [ROWS[bench.key](i) for i in range(n)]
    if bench.hub_id == "BLINK-Benchmark/BLINK":
        _write(folder / str(bench.config) / f"{bench.split}-00000-of-00001.parquet", rows)
    elif bench.config:
        _write(folder / bench.config / f"{bench.split}-00000-of-00001.parquet", rows)
    else:
        _write(folder / "data" / f"{bench.split}-00000-of-00001.parquet", rows)
    return folder


def write_fixtures(root: Path, keys: list[str] | None = None, n: int = 8) -> Path:
    for key in keys or list(BENCHMARKS):
        write_fixture(root, BENCHMARKS[key], n)
    return root
