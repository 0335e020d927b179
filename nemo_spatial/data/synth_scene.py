"""Synthetic scenes: coloured shapes at known pixel boxes, drawn with PIL, and the geometry questions ask about.

What it computes: a `Scene` of `Shape`s (an id `shape.k`, a colour name unique in the scene, an integer box
`[x1, y1, x2, y2]` that is the tight bounding box of the drawn polygon or ellipse, a drawing order) and its
rendering on a plain background. Later shapes are drawn over earlier ones, which is what makes "in front of"
decidable from the picture (occlusion). Placement is rejection sampling from a numpy Generator, so a scene is
a pure function of the generator's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (130, 40, 180),
    "orange": (245, 130, 20),
    "black": (20, 20, 20),
}
BACKGROUND = (236, 236, 230)
DIRECTIONS = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}


@dataclass
class Shape:
    kind: str  # one of SHAPES, or "arrow"
    colour: str
    points: list[tuple[float, float]]  # polygon vertices; for a circle, the two corners of its box
    order: int = 0  # drawing order: higher is drawn later (in front)
    direction: str = ""  # arrows only
    index: int = 0  # k of the id `kind.k`

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.index}"

    @property
    def name(self) -> str:
        return "arrow" if self.kind == "arrow" else f"{self.colour} {self.kind}"

    @property
    def box(self) -> list[int]:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return [math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys))]

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def area(self) -> int:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


@dataclass
class Scene:
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)

    def add(self, shape: Shape) -> Shape:
        shape.order = len(self.shapes)
        shape.index = len(self.shapes) + 1
        self.shapes.append(shape)
        return shape

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for shape in sorted(self.shapes, key=lambda s: s.order):
            fill = COLOURS[shape.colour]
            if shape.kind == "circle":
                draw.ellipse(shape.box, fill=fill)
            else:
                draw.polygon(shape.points, fill=fill)
        return image


def outline(kind: str, cx: float, cy: float, size: float, direction: str = "right") -> list[tuple[float, float]]:
    """Vertices of a shape of this kind centred at (cx, cy) that fits a size x size square."""
    r = size / 2
    if kind in ("circle", "square"):
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if kind == "triangle":
        return [(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if kind == "hexagon":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    if kind == "star":
        radii = [r if i % 2 == 0 else r * 0.45 for i in range(10)]
        angles = [-math.pi / 2 + i * math.pi / 5 for i in range(10)]
        return [(cx + q * math.cos(a), cy + q * math.sin(a)) for q, a in zip(radii, angles, strict=True)]
    if kind == "arrow":  # shaft and head pointing right, then rotated to `direction`
        pts = [(-r, -r / 4), (r / 5, -r / 4), (r / 5, -r), (r, 0), (r / 5, r), (r / 5, r / 4), (-r, r / 4)]
        dx, dy = DIRECTIONS[direction]
        return [(cx + x * dx - y * dy, cy + x * dy + y * dx) for x, y in pts]
    raise ValueError(f"unknown shape {kind!r}")


def boxes_apart(a: list[int], b: list[int], gap: int) -> bool:
    """Whether two boxes are at least `gap` pixels apart on some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def place(
    rng: np.random.Generator,
    scene: Scene,
    kind: str,
    colour: str,
    size: int,
    gap: int = 12,
    direction: str = "right",
    tries: int = 200,
) -> Shape | None:
    """A shape at a random position inside the image, `gap` px from every other shape; None if none fits."""
    margin = size // 2 + 4
    for _ in range(tries):
        cx = int(rng.integers(margin, scene.width - margin))
        cy = int(rng.integers(margin, scene.height - margin))
        shape = Shape(kind, colour, outline(kind, cx, cy, size, direction), direction=direction)
        if all(boxes_apart(shape.box, other.box, gap) for other in scene.shapes):
            return scene.add(shape)
    return None


def place_at(scene: Scene, kind: str, colour: str, cx: float, cy: float, size: int) -> Shape | None:
    """A shape at a given centre if it lies inside the image (overlap allowed); None otherwise."""
    shape = Shape(kind, colour, outline(kind, cx, cy, size))
    x1, y1, x2, y2 = shape.box
    if x1 < 0 or y1 < 0 or x2 >= scene.width or y2 >= scene.height:
        return None
    return scene.add(shape)


def relation(a: Shape, b: Shape, ratio: float = 2.0) -> str | None:
    """'left of' / 'right of' / 'above' / 'below' when a's box is clearly on one side of b's, else None."""
    (ax, ay), (bx, by) = a.centre, b.centre
    dx, dy = ax - bx, ay - by
    (a1, a2), (b1, b2) = (a.box[0], a.box[2]), (b.box[0], b.box[2])
    if abs(dx) >= ratio * abs(dy) and (a2 < b1 or b2 < a1):
        return "left of" if dx < 0 else "right of"
    (a1, a2), (b1, b2) = (a.box[1], a.box[3]), (b.box[1], b.box[3])
    if abs(dy) >= ratio * abs(dx) and (a2 < b1 or b2 < a1):
        return "above" if dy < 0 else "below"
    return None


def relative_direction(arrow: Shape, target: Shape, ratio: float = 2.0) -> str | None:
    """Where `target` is from the arrow's point of view (it faces where it points), if clearly one of four."""
    dx, dy = DIRECTIONS[arrow.direction]
    vx, vy = target.centre[0] - arrow.centre[0], target.centre[1] - arrow.centre[1]
    front = vx * dx + vy * dy
    left = vx * dy - vy * dx  # the arrow's left, seen from above the image plane
    if abs(front) >= ratio * abs(left):
        return "in front" if front > 0 else "behind"
    if abs(left) >= ratio * abs(front):
        return "to the left" if left > 0 else "to the right"
    return None
