"""Static HTML pieces shared by the rollout and eval viewers: the page shell (inline CSS, no scripts, no
network), escaping, and the SVG that draws boxes on an image.

The boxes are an inline SVG over the image (referenced beside the page, or inlined as a data URI by the caller),
in the prompt's pixel coordinates (`viewBox` = the `Image size` the prompt states, the image stretched to it),
so a box is where the reward saw it whatever size the saved PNG has.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass

# matplotlib's tab10: distinct on white and on photos, and the plots use the same colours.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
UNMATCHED = "#7f7f7f"

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
nav a { margin-right: 1em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .6em; border-radius: 4px;
      max-height: 28em; overflow: auto; font-size: .85em; }
table { border-collapse: collapse; margin: .4em 0; } td, th { border: 1px solid #ccc; padding: .2em .5em; }
th { background: #eee; text-align: left; }
.card { border: 1px solid #bbb; border-radius: 6px; padding: .8em; margin: 1em 0; display: flex; gap: 1.2em;
        flex-wrap: wrap; }
.card > div { flex: 1 1 420px; min-width: 0; }
.card svg { width: 100%; max-width: 520px; height: auto; border: 1px solid #ddd; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #b42318; font-weight: bold; }
.problem { background: #fff1f0; border-left: 4px solid #b42318; padding: .4em .7em; }
.legend span { display: inline-block; margin-right: 1em; }
.swatch { display: inline-block; width: .9em; height: .9em; vertical-align: middle; margin-right: .3em; }
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: no scripts, no external resources but images beside it."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class DrawnBox:
    """One box to draw: pixel coordinates (prompt's image size), its label, colour, and dashed or solid."""

    box: tuple[float, float, float, float]
    label: str
    colour: str
    dashed: bool


def scene_svg(
    image_href: str,
    size: tuple[int, int],
    boxes: Sequence[DrawnBox],
    links: Sequence[tuple[int, int]] = (),
) -> str:
    """The image with `boxes` drawn; `links` joins the centres of boxes[i] and boxes[j] (a matched pair)."""
    width, height = size
    stroke = max(1.5, min(width, height) / 150)
    font = max(9.0, min(width, height) / 28)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img'>",
        f"<image href='{esc(image_href)}' x='0' y='0' width='{width}' height='{height}' preserveAspectRatio='none'/>",
    ]
    for i, j in links:
        (ax, ay), (bx, by) = _centre(boxes[i].box), _centre(boxes[j].box)
        parts.append(
            f"<line x1='{ax:.1f}' y1='{ay:.1f}' x2='{bx:.1f}' y2='{by:.1f}' stroke='{boxes[i].colour}' "
            f"stroke-width='{stroke:.1f}' stroke-dasharray='2 2'/>"
        )
    for drawn in boxes:
        x1, y1, x2, y2 = drawn.box
        left, top = min(x1, x2), min(y1, y2)
        dash = f" stroke-dasharray='{stroke * 3:.1f} {stroke * 2:.1f}'" if drawn.dashed else ""
        parts.append(
            f"<rect x='{left:.1f}' y='{top:.1f}' width='{abs(x2 - x1):.1f}' height='{abs(y2 - y1):.1f}' "
            f"fill='none' stroke='{drawn.colour}' stroke-width='{stroke:.1f}'{dash}/>"
        )
        # Ground-truth labels above the box, predicted ones below it, so a matched pair's labels do not overlap.
        bottom = max(y1, y2)
        if drawn.dashed:
            label_y = bottom + font if bottom + font < height else bottom - 2
        else:
            label_y = top - 2 if top > font else top + font
        parts.append(
            f"<text x='{left + 1:.1f}' y='{label_y:.1f}' font-size='{font:.0f}' fill='{drawn.colour}' "
            f"stroke='white' stroke-width='{font / 6:.1f}' paint-order='stroke'>{esc(drawn.label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def scene_json(scene: object) -> str:
    """A scene graph as JSON with one object or relationship per line (readable, and short on the page)."""
    if not isinstance(scene, dict):
        return json.dumps(scene)
    parts = []
    for key, value in scene.items():
        if isinstance(value, list) and value:
            items = ",\n    ".join(json.dumps(item) for item in value)
            parts.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}" if parts else "{}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], raw_columns: frozenset[int] = frozenset()) -> str:
    """An HTML table; cells in `raw_columns` are inserted as HTML (already escaped by the caller)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell if i in raw_columns else esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
