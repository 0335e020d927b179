"""The batch's way through the trainer at the real recipe's shape: host memory per rank and preprocessing CPU per step.

    python benchmarks/batch_flow.py [--prompts 512] [--n 8] [--side 512] [--response 256] [--sample 12]

For DP = 1, 2 and 8 ranks, BEFORE (the code path up to commit 4b9a051: every rank reads and prepares every
prompt of the step, then `build_policy_batch` builds the WHOLE global batch with each prompt's pixel_values
copied n times, padded to the global longest row) and NOW (the driver's stream gives prompts WITHOUT
pixel_values: decode, resize, chat template, tokens with the image pads expanded from the image's size; the
driver hands each rank the prompts of its own rows (uint8 images and token ids); each rank makes their
pixel_values with `data.PixelPreparer`, once per prompt of its rows; its batch holds its rows only, each
prompt's image once).

Measured, not modelled: the CPU time of one prompt's light preparation (the driver's), of one full preparation
(BEFORE: the processor's call) and of one image's pixel_values (a rank's `PixelPreparer`), over `--sample`
synthetic prompts (the tiny model's processor, whose image processor is Qwen2.5-VL's own); the pickling +
unpickling CPU time of a light prompt (the hand-over, as `scatter_object_list` does it); and the NOW batch of
every rank, built by the real `rollouts.build_policy_batch` and handed to a policy stand-in that only receives
it (its bytes are counted from the tensors and checked against a model of its shapes; where the machine has
too little free memory to build one, the model gives it, and the script says so). The BEFORE batch at this
shape does not fit the 24 GB development machine (26 GB a rank at 512 x 8), so its bytes come from the old
function's shapes, checked against the old function itself at a small shape (printed). Per-step CPU figures
are per-prompt times x prompts prepared. Synthetic images repeat the `--sample` prepared ones (their tensors
are shared, so the prompts' own bytes are counted per prompt held, as separate images would take).
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from nemo_spatial.batch import PolicyBatch
from nemo_spatial.data import DataConfig, PixelPreparer, PromptStream
from nemo_spatial.data.processing import PromptSample
from nemo_spatial.generation.types import Rollout
from nemo_spatial.models.tiny import build_tiny_qwen25_vl
from nemo_spatial.rollouts import build_policy_batch, minibatch_rows, rank_rows

GB = 1e9


def old_build_policy_batch(prompts: list[PromptSample], rollouts: list[Rollout], n: int, pad_id: int) -> PolicyBatch:
    """The global batch as main built it on every rank (pixel_values copied n times; global padding)."""
    rows = len(rollouts)
    lengths = [int(prompts[i // n].input_ids.numel()) + len(r.token_ids) for i, r in enumerate(rollouts)]
    width = max(lengths)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.bool)
    response = torch.zeros((rows, width), dtype=torch.bool)
    rollout_log_probs = torch.zeros((rows, width), dtype=torch.float32)
    for i, rollout in enumerate(rollouts):
        start, end = prompts[i // n].input_ids.numel(), lengths[i]
        input_ids[i, :start] = prompts[i // n].input_ids
        input_ids[i, start:end] = torch.tensor(rollout.token_ids)
        attention[i, :end] = response[i, start:end] = True
    return PolicyBatch(
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=response,
        pixel_values=torch.cat([pixels_of(prompts[i // n]) for i in range(rows)]),
        image_grid_thw=torch.cat([prompts[i // n].image_grid_thw for i in range(rows)]).long(),
        rollout_log_probs=rollout_log_probs,
    )


def old_batch_bytes(prompts: list[PromptSample], n: int, width: int) -> int:
    """Bytes of `old_build_policy_batch`'s batch: int64 + 2 bool + fp32 per token cell; per row a copy of its
    prompt's pixels, its (1, 3) int64 grid, and its int64 images_per_sample / image_index entries."""
    rows = len(prompts) * n
    return rows * width * (8 + 1 + 1 + 4) + n * sum(pixels_of(p).nbytes for p in prompts) + rows * 5 * 8


def new_batch_bytes(own: dict[int, PromptSample], rows: int, width: int) -> int:
    """Bytes of the AFTER batch of a rank: the token cells, advantages (fp32), per row its int64 image count and
    image index, and each of its prompts' pixels and (1, 3) grid once."""
    return rows * width * (8 + 1 + 1 + 4) + rows * (4 + 8 + 8) + sum(pixels_of(p).nbytes + 24 for p in own.values())


def pixels_of(prompt: PromptSample) -> torch.Tensor:
    assert prompt.pixel_values is not None, "a fully prepared prompt"
    return prompt.pixel_values


def tensor_bytes(batch: PolicyBatch) -> int:
    return sum(v.nbytes for v in vars(batch).values() if isinstance(v, torch.Tensor))


def prompt_bytes(prompt: PromptSample) -> int:
    """A prompt's bytes held: its uint8 image, token ids (expanded and raw), grid, and fp32 patches if made."""
    image = prompt.image.width * prompt.image.height * len(prompt.image.getbands())
    pixels = 0 if prompt.pixel_values is None else int(prompt.pixel_values.nbytes)
    return int(pixels + prompt.input_ids.nbytes * 2 + prompt.image_grid_thw.nbytes + image)


@dataclass
class StandInPolicy:
    """Receives the batch and keeps nothing: what the trainer hands a rank's policy, counted."""

    received_bytes: int = 0

    def train_step(self, batch: PolicyBatch) -> None:
        self.received_bytes = max(self.received_bytes, tensor_bytes(batch))


@dataclass
class Prepared:
    full: list[PromptSample]  # BEFORE: the processor's call, pixel_values included
    light: list[PromptSample]  # NOW, on the driver: no pixel_values
    full_s: float  # CPU-seconds a prompt, each
    light_s: float
    pixels_s: float  # a rank's PixelPreparer, one image


def prepare(args: argparse.Namespace, tmp: Path) -> Prepared:
    """`--sample` real prompts at side^2, fully and lightly prepared, and the CPU-seconds each step takes."""
    model = str(build_tiny_qwen25_vl(tmp / "tiny"))
    pixels = args.side * args.side
    cfg = DataConfig(
        train_files=f"synthetic:{args.sample + 2}:0@train", val_files="", cache_dir=str(tmp / "cache"),
        min_pixels=pixels, max_pixels=pixels, num_workers=0, max_prompt_length=8192,
    )  # fmt: skip
    out: dict[bool, tuple[list[PromptSample], float]] = {}
    for with_pixels in (True, False):
        stream = PromptStream.open(cfg, "train", processor_path=model, pixels=with_pixels)
        stream.next_batch(2)  # warm-up: processor load, first-call caches
        started = time.process_time()
        samples = stream.next_batch(args.sample)
        out[with_pixels] = samples, (time.process_time() - started) / len(samples)
        stream.close()
    preparer = PixelPreparer(model)
    preparer.prepare(out[False][0][0])  # warm-up
    started = time.process_time()
    made = preparer(dict(enumerate(out[False][0])))
    pixels_s = (time.process_time() - started) / len(made)
    for full, own in zip(out[True][0], made.values(), strict=True):  # the same patches either way
        assert torch.equal(pixels_of(full), pixels_of(own))
    return Prepared(out[True][0], out[False][0], out[True][1], out[False][1], pixels_s)


def handover_seconds(prompts: list[PromptSample]) -> tuple[float, float]:
    """CPU-seconds per prompt to pickle (on the driver) and unpickle (on the rank) a share, as
    scatter_from_driver (torch's scatter_object_list) does."""
    started = time.process_time()
    data = pickle.dumps({i: p for i, p in enumerate(prompts)}, protocol=pickle.HIGHEST_PROTOCOL)
    pickled = time.process_time()
    pickle.loads(data)
    return (pickled - started) / len(prompts), (time.process_time() - pickled) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--side", type=int, default=512, help="images are side x side pixels")
    parser.add_argument("--response", type=int, default=256, help="response tokens of every sample")
    parser.add_argument("--sample", type=int, default=12, help="prompts actually prepared (then repeated)")
    parser.add_argument("--prompts-per-update", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare(args, Path(tmp))
    dumps_s, loads_s = handover_seconds(prep.light)
    P, n = args.prompts, args.n
    full = [prep.full[p % len(prep.full)] for p in range(P)]
    rollouts = [
        Rollout(f"{p}", i, [7] * args.response, [-0.5] * args.response, 0, "stop") for p in range(P) for i in range(n)
    ]
    pixel = sum(int(pixels_of(p).nbytes) for p in prep.full) / len(prep.full)  # type: ignore[union-attr]
    width = max(int(p.input_ids.numel()) for p in prep.full) + args.response  # the global longest row
    print(
        f"shape: {P} prompts x n={n}, {args.side}^2 images ({pixel / 1e6:.1f} MB of fp32 pixel_values each, "
        f"{int(prep.full[0].input_ids.numel())} prompt tokens), {args.response} response tokens"
    )
    print(
        f"one prompt, CPU ms: full preparation (before) {1000 * prep.full_s:.1f}; now the driver's light one "
        f"{1000 * prep.light_s:.1f} + its hand-over (pickle {1000 * dumps_s:.2f}, unpickle {1000 * loads_s:.2f}) + "
        f"a rank's pixel_values {1000 * prep.pixels_s:.1f} (measured on {len(prep.full)} prompts; the patches equal "
        "the full call's)"
    )
    small = old_build_policy_batch(full[:4], rollouts[: 4 * n], n, 0)
    modelled = old_batch_bytes(full[:4], n, int(small.input_ids.shape[1]))
    assert tensor_bytes(small) == modelled, f"the BEFORE model is off: {tensor_bytes(small)} != {modelled}"
    print(f"BEFORE bytes model checked against the old build_policy_batch at 4 x {n}: {tensor_bytes(small)} bytes")
    print(
        "| DP | before: GB a rank | now: GB driver / other | before: image preparations a step (all ranks), "
        "CPU-s a rank | now: image preparations a step (all ranks), CPU-s driver / other |"
    )
    print("|---|---|---|---|---|")
    built: list[str] = []
    for dp in (1, 2, 8):
        row, made = now_per_rank(args, dp, full, prep, rollouts, built)
        before_gb = (sum(prompt_bytes(p) for p in full) + old_batch_bytes(full, n, width)) / GB
        share = P // dp
        # The driver: every prompt lightly, its own share's pixel_values; pickling every share (its own too, as
        # scatter_object_list does) and unpickling its own. The others: unpickle and prepare their share.
        driver_s = P * prep.light_s + share * prep.pixels_s + (P * dumps_s + share * loads_s if dp > 1 else 0.0)
        other_s = share * (loads_s + prep.pixels_s)
        now_cpu = f"{driver_s:.1f} / {other_s:.1f}" if dp > 1 else f"{driver_s:.1f}"
        print(f"| {dp} | {before_gb:.1f} | {row} | {P * dp}, {P * prep.full_s:.1f} | {made}, {now_cpu} |")
    print(
        f"NOW batches built by build_policy_batch and handed to the stand-in (their bytes equal the model): "
        f"{', '.join(built) or 'none (too little free memory)'}; the others from the same model"
    )


def now_per_rank(
    args: argparse.Namespace,
    dp: int,
    full: list[PromptSample],
    prep: Prepared,
    rollouts: list[Rollout],
    built: list[str],
) -> tuple[str, int]:
    """("driver GB / other GB", image preparations over all ranks) of the NOW path at `dp` ranks."""
    P, n = args.prompts, args.n
    light = [prep.light[p % len(prep.light)] for p in range(P)]
    minibatches = minibatch_rows(P, n, args.prompts_per_update)
    advantages = torch.zeros(P * n)
    held, prepared = [], 0
    for rank in range(dp):
        rows = [i for share in rank_rows(minibatches, rank, dp) for i in share]
        own = {p: full[p] for p in dict.fromkeys(i // n for i in rows)}  # what PixelPreparer gives (equal patches)
        prepared += len(own)
        own_width = max(int(p.input_ids.numel()) for p in own.values()) + args.response  # the rank's longest
        modelled = new_batch_bytes(own, len(rows), own_width)
        if modelled < psutil.virtual_memory().available / 3:  # build it for real where the machine has room
            batch = build_policy_batch(own, rollouts, n, advantages, 0, rows)
            policy = StandInPolicy()
            policy.train_step(batch)
            assert policy.received_bytes == modelled, (policy.received_bytes, modelled)
            built.append(f"DP={dp} rank {rank}")
            del batch
        held.append(sum(prompt_bytes(p) for p in own.values()) + modelled)
    # The driver also holds the step's light prompts (uint8 images, token ids) of the other ranks' rows.
    others = {p for p in range(P)} - {i // n for share in rank_rows(minibatches, 0, dp) for i in share}
    driver_gb = (held[0] + sum(prompt_bytes(light[p]) for p in others)) / GB
    row = f"{driver_gb:.2f} / {max(held[1:]) / GB:.2f}" if dp > 1 else f"{driver_gb:.2f}"
    return row, prepared


if __name__ == "__main__":
    main()
