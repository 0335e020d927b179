"""The worked examples of ../shared/docs/reward-spec.md as reward inputs (the expected values live in tests).

Image size (640 x 480); ground truth bike.1 [0,272,310,451], man.1 [0,165,38,278], man.1 behind bike.1,
answer "(A) behind".
"""

from __future__ import annotations

import json
from typing import Any

from nemo_spatial.reward.batch import RewardSample

PROBLEM = (
    "<image>Answer the question about the image.\nImage size: (640 x 480)\n"
    "Now answer the following question:\nQ. Where is the man relative to the bike?\n"
    "Options:\n(A) behind\n(B) in front of"
)
BIKE = {"id": "bike.1", "bbox": [0, 272, 310, 451]}
MAN = {"id": "man.1", "bbox": [0, 165, 38, 278]}
BEHIND = {"subject": "man.1", "predicate": "behind", "object": "bike.1"}
GT_SCENE = {"objects": [BIKE, MAN], "relationships": [BEHIND]}
GROUND_TRUTH = f"<scene>{json.dumps(GT_SCENE)}</scene>\n<answer>(A) behind</answer>"


def response(scene: Any = GT_SCENE, answer: str = "(A) behind", order: tuple[str, ...] = ()) -> str:
    """A response with the four blocks; `order` lists the tags in another order when given."""
    blocks = {
        "observe": "<observe>A man stands behind a bike.</observe>",
        "scene": f"<scene>{scene if isinstance(scene, str) else json.dumps(scene)}</scene>",
        "think": "<think>The man is further from the camera than the bike.</think>",
        "answer": f"<answer>{answer}</answer>",
    }
    return "\n".join(blocks[tag] for tag in (order or ("observe", "scene", "think", "answer")))


def _shifted(obj: dict[str, Any], dx: float, dy: float) -> dict[str, Any]:
    x1, y1, x2, y2 = obj["bbox"]
    return {"id": obj["id"], "bbox": [x1 + dx, y1 + dy, x2 + dx, y2 + dy]}


def _scene(*objects: dict[str, Any], relationships: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"objects": list(objects), "relationships": [BEHIND] if relationships is None else relationships}


WORKED_RESPONSES: dict[str, str] = {
    "exact ground-truth scene": response(),
    "bike shifted (+20,+10) px, man (+5,+5) px": response(_scene(_shifted(BIKE, 20, 10), _shifted(MAN, 5, 5))),
    "perfect scene, answer (B) in front of": response(answer="(B) in front of"),
    "answer A only": response(answer="A"),
    "answer '  (a) BEHIND '": response(answer="  (a) BEHIND "),
    "no <observe> block": response().split("\n", 1)[1],
    "two extra objects and three relationships": response(
        _scene(
            BIKE,
            MAN,
            {"id": "tree.1", "bbox": [400, 0, 640, 300]},
            {"id": "dog.1", "bbox": [300, 350, 400, 450]},
            relationships=[
                BEHIND,
                {"subject": "tree.1", "predicate": "behind", "object": "man.1"},
                {"subject": "dog.1", "predicate": "near", "object": "bike.1"},
            ],
        )
    ),
    "only man.1, no relationships": response(_scene(MAN, relationships=[])),
    "correct labels, non-overlapping boxes": response(_scene(_shifted(BIKE, 390, 17), _shifted(MAN, 390, 17))),
    "empty scene": response({"objects": [], "relationships": []}),
    "tags in another order": response(order=("think", "answer", "observe", "scene")),
    "labels of the two boxes swapped": response(
        _scene({"id": "bike.1", "bbox": MAN["bbox"]}, {"id": "man.1", "bbox": BIKE["bbox"]})
    ),
}


def worked_samples() -> dict[str, RewardSample]:
    return {name: RewardSample(text, GROUND_TRUTH, PROBLEM) for name, text in WORKED_RESPONSES.items()}
