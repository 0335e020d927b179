"""The batch's way through the trainer at the real recipe's shape: host memory per rank and preprocessing CPU per step.

    python benchmarks/batch_flow.py [--prompts 512] [--n 8] [--side 512] [--response 256] [--sample 12]

For DP = 1, 2 and 8 ranks, BEFORE (the code path up to commit 4b9a051: every rank reads and prepares every
prompt of the step, then `build_policy_batch` builds the WHOLE global batch with each prompt's pixel_values
copied n times, padded to the global longest row) and AFTER (the driver alone prepares each prompt once and
hands each rank the prompts of its own rows; the rank's batch holds its rows only, each prompt's image once).

Measured, not modelled: one prompt's preparation CPU time (decode, resize to side^2, chat template, the
Qwen2.5-VL image processor: the tiny model's processor, whose image processor is Qwen2.5-VL's own) over
`--sample` synthetic prompts; the pickling + unpickling CPU time of a rank's share (what the hand-over costs);
and the AFTER batch of every rank, built by the real `rollouts.build_policy_batch` and handed to a policy
stand-in that only receives it (its bytes are counted from the tensors and checked against a model of its
shapes; where the machine has too little free memory to build one, the model gives it, and the script says
so). The BEFORE batch at this shape does
not fit the 24 GB development machine (26 GB a rank at 512 x 8), so its bytes come from the old function's
shapes, checked against the old function itself at a small shape (printed). Per-step CPU figures are
per-prompt times x prompts prepared. Synthetic images repeat the `--sample` prepared ones (their tensors are
shared, so the prompts' own bytes are counted per prompt held, as separate images would take).
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
from nemo_spatial.data import DataConfig, PromptStream
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
        pixel_values=torch.cat([prompts[i // n].pixel_values for i in range(rows)]),
        image_grid_thw=torch.cat([prompts[i // n].image_grid_thw for i in range(rows)]).long(),
        rollout_log_probs=rollout_log_probs,
    )


def old_batch_bytes(prompts: list[PromptSample], n: int, width: int) -> int:
    """Bytes of `old_build_policy_batch`'s batch: int64 + 2 bool + fp32 per token cell; per row a copy of its
    prompt's pixels, its (1, 3) int64 grid, and its int64 images_per_sample / image_index entries."""
    rows = len(prompts) * n
    return rows * width * (8 + 1 + 1 + 4) + n * sum(p.pixel_values.nbytes for p in prompts) + rows * 5 * 8


def new_batch_bytes(own: dict[int, PromptSample], rows: int, width: int) -> int:
    """Bytes of the AFTER batch of a rank: the token cells, advantages (fp32), per row its int64 image count and
    image index, and each of its prompts' pixels and (1, 3) grid once."""
    return rows * width * (8 + 1 + 1 + 4) + rows * (4 + 8 + 8) + sum(p.pixel_values.nbytes + 24 for p in own.values())


def tensor_bytes(batch: PolicyBatch) -> int:
    return sum(v.nbytes for v in vars(batch).values() if isinstance(v, torch.Tensor))


def prompt_bytes(prompt: PromptSample) -> int:
    image = prompt.image.width * prompt.image.height * len(prompt.image.getbands())
    return int(prompt.pixel_values.nbytes + prompt.input_ids.nbytes * 2 + prompt.image_grid_thw.nbytes + image)


@dataclass
class StandInPolicy:
    """Receives the batch and keeps nothing: what the trainer hands a rank's policy, counted."""

    received_bytes: int = 0

    def train_step(self, batch: PolicyBatch) -> None:
        self.received_bytes = max(self.received_bytes, tensor_bytes(batch))


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[list[PromptSample], float]:
    """`--sample` real prompts at side^2 and the CPU-seconds one takes (decode to processor outputs)."""
    model = str(build_tiny_qwen25_vl(tmp / "tiny"))
    pixels = args.side * args.side
    cfg = DataConfig(
        train_files=f"synthetic:{args.sample + 2}:0@train", val_files="", cache_dir=str(tmp / "cache"),
        min_pixels=pixels, max_pixels=pixels, num_workers=0, max_prompt_length=8192,
    )  # fmt: skip
    stream = PromptStream.open(cfg, "train", processor_path=model)
    stream.next_batch(2)  # warm-up: processor load, first-call caches
    started = time.process_time()
    samples = stream.next_batch(args.sample)
    per_prompt = (time.process_time() - started) / len(samples)
    stream.close()
    return samples, per_prompt


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
        sample, prep_s = prepare(args, Path(tmp))
    dumps_s, loads_s = handover_seconds(sample)
    P, n = args.prompts, args.n
    prompts = [sample[p % len(sample)] for p in range(P)]
    rollouts = [
        Rollout(f"{p}", i, [7] * args.response, [-0.5] * args.response, 0, "stop") for p in range(P) for i in range(n)
    ]
    pixel = sum(int(p.pixel_values.nbytes) for p in sample) / len(sample)
    width = max(int(p.input_ids.numel()) for p in sample) + args.response  # the global longest row
    print(
        f"shape: {P} prompts x n={n}, {args.side}^2 images ({pixel / 1e6:.1f} MB of fp32 pixel_values each, "
        f"{int(sample[0].input_ids.numel())} prompt tokens), {args.response} response tokens"
    )
    print(
        f"one prompt's preparation: {1000 * prep_s:.1f} ms CPU; its hand-over: pickle {1000 * dumps_s:.1f} ms + "
        f"unpickle {1000 * loads_s:.1f} ms CPU (measured on {len(sample)} prompts)"
    )
    small = old_build_policy_batch(prompts[:4], rollouts[: 4 * n], n, 0)
    modelled = old_batch_bytes(prompts[:4], n, int(small.input_ids.shape[1]))
    assert tensor_bytes(small) == modelled, f"the BEFORE model is off: {tensor_bytes(small)} != {modelled}"
    print(f"BEFORE bytes model checked against the old build_policy_batch at 4 x {n}: {tensor_bytes(small)} bytes")
    advantages = torch.zeros(P * n)
    built: list[str] = []
    print(
        "| DP | before: GB a rank (prompts + batch) | after: GB a rank (driver / other) | before: preparations, "
        "CPU-s a rank | after: preparations, CPU-s driver / other |"
    )
    print("|---|---|---|---|---|")
    for dp in (1, 2, 8):
        before_gb = (sum(prompt_bytes(p) for p in prompts) + old_batch_bytes(prompts, n, width)) / GB
        minibatches = minibatch_rows(P, n, args.prompts_per_update)
        held = []
        for rank in range(dp):
            rows = [i for share in rank_rows(minibatches, rank, dp) for i in share]
            own = {p: prompts[p] for p in dict.fromkeys(i // n for i in rows)}
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
        # The driver holds every prompt (its stream's batch) besides its own share's copy and batch.
        everything = sum(prompt_bytes(p) for p in prompts)
        driver_gb = (everything + held[0]) / GB if dp > 1 else held[0] / GB
        other_gb = max(held[1:]) / GB if dp > 1 else 0.0
        own_share = P // dp
        before_cpu = P * prep_s
        # scatter_object_list pickles every rank's share on the driver (its own too) and each rank unpickles its own.
        after_driver = P * prep_s + (P * dumps_s + own_share * loads_s if dp > 1 else 0.0)
        after_other = own_share * loads_s
        after_gb = f"{driver_gb:.2f} / {other_gb:.2f}" if dp > 1 else f"{driver_gb:.2f}"
        after_cpu = f"{P}, {after_driver:.1f} / {after_other:.2f}" if dp > 1 else f"{P}, {after_driver:.1f}"
        print(f"| {dp} | {before_gb:.1f} | {after_gb} | {P * dp}, {before_cpu:.1f} | {after_cpu} |")
    print(
        f"AFTER batches built by build_policy_batch and handed to the stand-in (their bytes equal the model): "
        f"{', '.join(built) or 'none (too little free memory)'}; the others from the same model"
    )


if __name__ == "__main__":
    main()
