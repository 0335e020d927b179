"""A training run's directory as the trainer writes it (metrics.jsonl, config.yaml, run_info.json, rollouts/,
checkpoints/), built from the reward spec's worked examples, so the viewer and report tests read real formats."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from nemo_spatial.reward import RewardSample, RewardScorer
from nemo_spatial.reward.examples import BIKE, GROUND_TRUTH, MAN, PROBLEM, response
from nemo_spatial.reward.parsing import parse_scene

# (label, text): a perfect one, shifted boxes, a wrong answer, an extra unmatched object, and two that fail.
RESPONSES = (
    ("exact", response()),
    ("shifted", response({"objects": [{"id": "bike.1", "bbox": [30, 280, 330, 460]}, MAN], "relationships": []})),
    ("wrong answer", response(answer="(B) in front of")),
    ("extra object", response({"objects": [BIKE, MAN, {"id": "tree.1", "bbox": [420, 20, 620, 300]}]})),
    ("broken json", response('{"objects": [{"id": "bike.1", "bbox": [0, 272, 310')),
    ("no scene", "<observe>hm</observe><answer>(A) behind</answer>"),
)


def write_run(run_dir: Path, steps: int = 4, sample_steps: tuple[int, ...] = (2, 4)) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("trainer:\n  total_steps: 4\nreward:\n  similarity: trigram\n")
    info = {"git": "0" * 40, "argv": ["/x/nemo_spatial/train.py", "--config", "conf/debug/tiny_cpu.yaml"]}
    (run_dir / "run_info.json").write_text(json.dumps({**info, "started": "2026-12-01T09:00:00+0000"}))
    with (run_dir / "metrics.jsonl").open("w") as out:
        for step in range(1, steps + 1):
            out.write(json.dumps(_metrics(step)) + "\n")
    scorer = RewardScorer("spatialthinker", "trigram")
    scores = scorer.score_batch([RewardSample(text, GROUND_TRUTH, PROBLEM) for _, text in RESPONSES])
    for step in sample_steps:
        folder = run_dir / "rollouts" / f"step_{step:06d}"
        folder.mkdir(parents=True)
        _image().save(folder / "image.png")
        record = {
            "prompt": PROBLEM,
            "ground_truth": GROUND_TRUTH,
            "samples": [
                {"response": text, "scene_graph": parse_scene(text), "reward": r.components(), "error": r.error}
                for (_, text), r in zip(RESPONSES, scores.results, strict=True)
            ],
        }
        (folder / "rollouts.json").write_text(json.dumps(record, indent=2))
    for step in (2, 4):
        (run_dir / "checkpoints" / f"step_{step:06d}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"step_{step:06d}" / "COMPLETE").write_text("")
    (run_dir / "checkpoints" / "latest").write_text("step_000004\n")
    return run_dir


def _metrics(step: int) -> dict[str, float]:
    reward = 0.1 * step
    record: dict[str, float] = {"step": step, "reward/overall/mean": reward, "reward/errors": 0.0}
    for name in ("format", "count", "accuracy", "spatial"):
        record[f"reward/{name}/mean"] = min(1.0, reward * 1.5)
    record.update(
        {
            "actor/kl_mean": 1e-3 * step,
            "actor/ppo_kl": 1e-4 * step,
            "actor/clip_frac_low": 0.01,
            "actor/clip_frac_high": 0.02 * step,
            "actor/dual_clip_frac": 0.0,
            "actor/grad_norm": 0.5,
            "response/length/mean": 40.0 + step,
            "response/length/min": 30.0,
            "response/length/max": 48.0,
            "response/truncated_fraction": 0.25,
            "timing/generate_s": 4.0,
            "timing/reward_s": 0.1,
            "timing/old_log_probs_s": 0.5,
            "timing/update_s": 1.5,
            "timing/sync_s": 0.3,
            "timing/step_s": 6.6,
            "throughput/tokens_per_s": 500.0,
        }
    )
    if step % 2 == 0:
        record["val/reward/overall/mean"] = 0.05 * step
    return record


def _image() -> Image.Image:
    """A 320 x 240 picture (half the prompt's 640 x 480, as the trainer saves resized images) with the objects."""
    image = Image.new("RGB", (320, 240), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 136, 155, 225], fill=(120, 130, 120))  # the bike
    draw.rectangle([0, 82, 19, 139], fill=(170, 150, 130))  # the man
    return image
