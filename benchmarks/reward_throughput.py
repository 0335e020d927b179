"""Reward throughput: responses per second per preset, and what each component costs.

    python benchmarks/reward_throughput.py [--n 20000] [--seed 0]

Responses have the shape of a policy's mid-training output on STVQA (2-6 ground-truth objects, 0-3
relations; about 60% well formed, a third of those with the right answer and boxes off by a few pixels,
the rest broken in the ways policies break them), scored on one core with the offline similarity.
Responses per CPU-second is the figure to compare on a shared machine: wall time counts the waits for a
core, CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward import spatialthinker as st
from nemo_spatial.reward.parsing import extract_answer, parse_scene
from nemo_spatial.reward.similarity import TrigramSimilarity

LABELS = ["man", "bike", "car", "dog", "tree", "chair", "table", "cup", "fire_hydrant", "person"]
PROBLEM = "<image>...\nImage size: (640 x 480)\nNow answer the following question:\nQ. ...\n(A) left\n(B) right"


def make_group(rng: random.Random, n: int) -> list[RewardSample]:
    """n responses to one prompt (one ground truth), as a GRPO rollout group."""
    first = make_case(rng)
    return [first, *(make_case(rng, first.ground_truth) for _ in range(n - 1))]


def make_case(rng: random.Random, ground_truth: str | None = None) -> RewardSample:
    if ground_truth is not None:  # another response to the same prompt: reuse its objects
        scene = json.loads(ground_truth.split("<scene>")[1].split("</scene>")[0])
        return _response(rng, scene["objects"], scene["relationships"], ground_truth)
    n_objects = rng.randint(2, 6)
    objects = []
    for i, label in enumerate(rng.sample(LABELS, n_objects)):
        x, y = rng.randint(0, 500), rng.randint(0, 380)
        objects.append({"id": f"{label}.{i + 1}", "bbox": [x, y, x + rng.randint(20, 140), y + rng.randint(20, 100)]})
    relations = [
        {"subject": objects[0]["id"], "predicate": "left of", "object": objects[j]["id"]}
        for j in range(1, min(n_objects, rng.randint(1, 4)))
    ]
    gt = f"<scene>{json.dumps({'objects': objects, 'relationships': relations})}</scene>\n<answer>(A) left</answer>"
    return _response(rng, objects, relations, gt)


def _response(rng: random.Random, objects: list[dict], relations: list[dict], gt: str) -> RewardSample:
    n_objects = len(objects)
    pred_objects = [
        {"id": o["id"], "bbox": [v + rng.randint(-15, 15) for v in o["bbox"]]} for o in objects if rng.random() < 0.85
    ]
    scene = json.dumps({"objects": pred_objects, "relationships": relations[: rng.randint(0, len(relations))]})
    answer = rng.choice(["(A) left", "(B) right", "(a) LEFT"])
    roll = rng.random()
    if roll < 0.6:
        text = f"<observe>I see {n_objects} things.</observe>\n<scene>{scene}</scene>\n<think>Compare x.</think>\n"
        text += f"<answer>{answer}</answer>"
    elif roll < 0.75:
        text = f"<think>hmm</think><answer>{answer}</answer>"  # missing blocks
    elif roll < 0.9:
        text = f"<observe>x</observe><scene>{scene[:-5]}</scene><think>y</think><answer>{answer}</answer>"
    else:
        text = "I think the answer is (A) left. " * rng.randint(1, 20)
    return RewardSample(text, gt, PROBLEM)


def rate(fn: Callable[[RewardSample], object], cases: list[RewardSample]) -> float:
    start = time.perf_counter()
    for case in cases:
        fn(case)
    return len(cases) / (time.perf_counter() - start)


def _throughput(scorer: RewardScorer, samples: list[RewardSample], label: str) -> None:
    """One pass over `samples` (the ground-truth cache cleared first), in responses per second."""
    scorer.score_batch(samples[:200])  # warm imports
    st.parse_ground_truth.cache_clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    batch = scorer.score_batch(samples)
    per_s = len(samples) / (time.perf_counter() - start)
    per_cpu_s = len(samples) / (time.process_time() - cpu_start)
    mean = sum(batch.column("overall")) / len(samples)
    print(f"  {label:34s} {per_s:8,.0f} responses/s wall, {per_cpu_s:8,.0f} per CPU-second  (mean {mean:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", type=int, default=8, help="responses per prompt (upstream rollout n=8)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [make_case(rng) for _ in range(args.n)]
    grouped = [case for _ in range(args.n // args.group) for case in make_group(rng, args.group)]
    sim = TrigramSimilarity()
    print(f"{args.n} responses of realistic shape, one process, trigram similarity")
    for label, samples in ((f"groups of {args.group}", grouped), ("all distinct", cases)):
        for preset in ("spatialthinker", "r1v"):
            _throughput(RewardScorer(preset, sim), samples, f"{preset} ({label})")

    formatted = [c for c in cases if st.format_reward(c.response) == 1.0]
    spatial_cases = [c for c in formatted if extract_answer(c.response).lower() == "(a) left"]
    print("per-component cost (spatialthinker), microseconds per call:")
    parts = {
        "format (tags + JSON + validation)": (lambda c: st.format_reward(c.response), cases),
        "count (one scene parse)": (
            lambda c: st.count_reward(parse_scene(c.response), st.parse_ground_truth(c.ground_truth).scene),
            formatted,
        ),
        "accuracy": (
            lambda c: st.accuracy_reward(extract_answer(c.response), extract_answer(c.ground_truth)),
            formatted,
        ),
        "spatial (parses + mciou + Hungarian)": (
            lambda c: st.spatial_reward(parse_scene(c.response), st.parse_ground_truth(c.ground_truth), 640, 480, sim),
            spatial_cases,
        ),
    }
    for name, (fn, subset) in parts.items():
        print(f"  {name:38s} {1e6 / rate(fn, subset):8.1f} us  (on {len(subset)} responses)")


if __name__ == "__main__":
    main()
