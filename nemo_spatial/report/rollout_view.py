"""The rollout viewer: `RUN_DIR/rollouts/step_N/index.html` for each sampled step, and `rollouts/index.html`.

Reads what the trainer writes per sampled step (`rollouts.json`: prompt, ground_truth, samples of
{response, scene_graph, reward, error}; `image.png` beside it). Each page shows the image with the ground-truth
boxes, the question and options, and per response: its boxes drawn over the image (a predicted box in the
colour of the ground-truth object the reward matched it to, dashed, joined to it by a line; unmatched ones
grey), its text, its parsed scene graph, its reward breakdown, and, when the scene fails the format check,
every reason why. Static files only: the pages reference `image.png` beside them and carry no scripts.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_spatial.fileio import atomic_write_text
from nemo_spatial.report.html import UNMATCHED, DrawnBox, colour, esc, page, scene_json, scene_svg, table
from nemo_spatial.report.scenes import SceneView, ground_truth_of, image_size_of, view_scene
from nemo_spatial.reward.parsing import box_as_floats, extract_answer
from nemo_spatial.reward.similarity import LabelSimilarity
from nemo_spatial.reward.spatialthinker import GroundTruth

logger = logging.getLogger(__name__)

COMPONENTS = ("overall", "format", "count", "accuracy", "spatial")
STEP_DIR = re.compile(r"step_(\d+)$")
QUESTION_MARKER = "Now answer the following question:"


@dataclass(frozen=True)
class StepPage:
    """One rendered step: for the index."""

    step: int
    path: Path
    question: str
    rewards: list[float]
    formats_ok: int


def step_folders(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "rollouts"
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.search(p.name)) and p.is_dir()]
    return sorted((step, p) for step, p in found if (p / "rollouts.json").exists())


def question_of(prompt: str) -> str:
    """The question and options: what follows the template's last instruction (the whole prompt otherwise)."""
    if QUESTION_MARKER in prompt:
        return prompt.rsplit(QUESTION_MARKER, 1)[1].strip()
    return prompt.strip()


def render_rollouts(run_dir: Path, similarity: LabelSimilarity) -> list[Path]:
    """Every sampled step's page and the index; a step whose rollouts.json cannot be read is named in the index."""
    pages: list[StepPage] = []
    broken: list[tuple[int, str]] = []
    folders = step_folders(run_dir)
    steps = [s for s, _ in folders]
    for i, (step, folder) in enumerate(folders):
        try:
            record = json.loads((folder / "rollouts.json").read_text())
            nav = (steps[i - 1] if i > 0 else None, steps[i + 1] if i + 1 < len(steps) else None)
            pages.append(render_step(folder, step, record, similarity, nav))
        except (ValueError, KeyError, TypeError, OSError) as error:
            logger.warning("rollout sample %s not rendered: %s", folder, error)
            broken.append((step, f"{type(error).__name__}: {error}"))
    index = _index(run_dir, pages, broken)
    return [p.path for p in pages] + [index]


def render_step(
    folder: Path, step: int, record: dict[str, Any], similarity: LabelSimilarity, nav: tuple[int | None, int | None]
) -> StepPage:
    prompt, gt_text = str(record["prompt"]), str(record["ground_truth"])
    samples: list[dict[str, Any]] = list(record["samples"])
    gt, gt_problem = ground_truth_of(gt_text)
    size, size_problem = image_size_of(prompt)
    if size is None:
        size = _png_size(folder / "image.png")
    question = question_of(prompt)
    links = "<a href='../index.html'>all steps</a>" + "".join(
        f"<a href='../step_{s:06d}/index.html'>{label} (step {s})</a>"
        for s, label in ((nav[0], "previous"), (nav[1], "next"))
        if s is not None
    )
    body = [f"<nav>{links}</nav>", f"<h1>Step {step}: {len(samples)} sampled responses to one prompt</h1>"]
    overview = scene_svg("image.png", size, _gt_boxes(gt)) if size else "<p class='problem'>no image size</p>"
    body.append(f"<div class='card'><div>{overview}</div><div><h2>Question</h2><pre>{esc(question)}</pre>")
    body.append(f"<p>Ground-truth answer: <b>{esc(extract_answer(gt_text))}</b></p>")
    for problem in (gt_problem, size_problem):
        if problem:
            body.append(f"<p class='problem'>{esc(problem)}</p>")
    body.append(f"<details><summary>ground truth (raw)</summary><pre>{esc(gt_text)}</pre></details>")
    body.append(f"<details><summary>whole prompt</summary><pre>{esc(prompt)}</pre></details></div></div>")
    body.append(_legend())
    formats_ok = 0
    for index, sample in enumerate(samples):
        response = str(sample.get("response", ""))
        view = view_scene(response, gt, size, similarity) if gt is not None and size else None
        formats_ok += view is not None and not view.problems
        body.append(_response_card(index, len(samples), sample, view, gt, extract_answer(gt_text), size))
    path = folder / "index.html"
    atomic_write_text(path, page(f"step {step} rollouts", "\n".join(body)))
    rewards = [float(s.get("reward", {}).get("overall", 0.0)) for s in samples]
    return StepPage(step, path, question.splitlines()[0] if question else "", rewards, formats_ok)


def _gt_boxes(gt: GroundTruth | None) -> list[DrawnBox]:
    if gt is None:
        return []
    ids = [str(obj["id"]) for obj in gt.scene.get("objects", []) if isinstance(obj, dict)]
    return [DrawnBox(box, f"GT {ids[i]}", colour(i), dashed=False) for i, box in enumerate(gt.boxes)]


def _response_card(
    index: int,
    total: int,
    sample: dict[str, Any],
    view: SceneView | None,
    gt: GroundTruth | None,
    gt_answer: str,
    size: tuple[int, int] | None,
) -> str:
    response = str(sample.get("response", ""))
    reward = sample.get("reward", {}) or {}
    answer = extract_answer(response)
    correct = answer.strip().lower() == gt_answer.strip().lower()
    verdict = f"<span class='{'ok' if correct else 'bad'}'>{'correct' if correct else 'wrong'}</span>"
    left = ""
    if view is not None and size is not None and gt is not None:
        boxes, links = _drawn(view, gt)
        left = scene_svg("image.png", size, boxes, links)
    parts = [f"<h2>Response {index + 1} of {total}: reward {float(reward.get('overall', 0.0)):.3f}</h2>"]
    parts.append(table(COMPONENTS, [[f"{float(reward.get(c, 0.0)):.3f}" for c in COMPONENTS]]))
    parts.append(f"<p>Answer: <b>{esc(answer) or '(none)'}</b> {verdict}</p>")
    if sample.get("error"):
        parts.append(f"<p class='problem'>reward error: {esc(sample['error'])}</p>")
    if view is not None:
        parts.append(_scene_status(view))
    parts.append(f"<h3>Text</h3><pre>{esc(response)}</pre>")
    scene = sample.get("scene_graph") or (view.scene if view else {})
    parts.append(f"<h3>Parsed scene graph</h3><pre>{esc(scene_json(scene)) if scene else '{}'}</pre>")
    return f"<div class='card' id='response-{index + 1}'><div>{left}</div><div>{''.join(parts)}</div></div>"


def _scene_status(view: SceneView) -> str:
    if view.problems:
        reasons = "".join(f"<li>{esc(p)}</li>" for p in view.problems)
        return f"<div class='problem'>The scene does not pass the format check:<ul>{reasons}</ul></div>"
    pairs = ", ".join(f"{view.objects[p]['id']} with GT {g + 1} (mcIoU {s:.2f})" for g, p, s in view.matches)
    return f"<p>Scene parses and passes the format check. Matched: {esc(pairs) or 'nothing'}</p>"


def _drawn(view: SceneView, gt: GroundTruth) -> tuple[list[DrawnBox], list[tuple[int, int]]]:
    boxes = _gt_boxes(gt)
    matched = {p: (g, s) for g, p, s in view.matches}
    links: list[tuple[int, int]] = []
    for p, obj in enumerate(view.objects):
        try:
            box = box_as_floats(obj["bbox"])
        except ValueError:
            continue
        if p in matched:
            g, score = matched[p]
            links.append((g, len(boxes)))
            boxes.append(DrawnBox(box, f"{obj['id']} ({score:.2f})", colour(g), dashed=True))
        else:
            boxes.append(DrawnBox(box, f"{obj['id']} (unmatched)", UNMATCHED, dashed=True))
    return boxes, links


def _legend() -> str:
    return (
        "<p class='legend'><span>solid: ground truth</span><span>dashed: predicted, in the colour of the "
        "ground-truth object it is matched to (number: mcIoU), joined by a dotted line</span>"
        f"<span><i class='swatch' style='background:{UNMATCHED}'></i>grey: unmatched prediction</span></p>"
    )


def _index(run_dir: Path, pages: list[StepPage], broken: list[tuple[int, str]]) -> Path:
    rows = [
        [
            f"<a href='step_{p.step:06d}/index.html'>step {p.step}</a>",
            f"{sum(p.rewards) / max(len(p.rewards), 1):.3f}",
            f"{max(p.rewards, default=0.0):.3f}",
            f"{p.formats_ok}/{len(p.rewards)}",
            esc(p.question),
        ]
        for p in pages
    ]
    rows += [[f"step {s}", "-", "-", "-", f"<span class='bad'>not readable: {esc(why)}</span>"] for s, why in broken]
    headers = ["step", "mean reward", "best reward", "scenes passing format", "question"]
    plots = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    figures = "".join(f"<img src='../plots/{p.name}' alt='{esc(p.stem)}' style='max-width:48%'>" for p in plots)
    body = f"<h1>Rollout samples of {esc(run_dir.name)}</h1>" + table(headers, rows, frozenset(range(5))) + figures
    path = run_dir / "rollouts" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page(f"{run_dir.name} rollouts", body))
    return path


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header (no image library needed); None when it is not a PNG."""
    try:
        header = path.read_bytes()[:24]
    except OSError:
        return None
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
