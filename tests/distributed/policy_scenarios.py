"""What the distributed policy tests run: one group of 2 processes over gloo goes through every layout in turn.

Starting processes and importing Megatron-Bridge costs ~30 s on this machine, so `run_layouts` starts the group
once and re-initialises Megatron's parallel state per layout (TP=2, TP=2+SP, PP=2, DP=2 with TP=1). Each phase
builds the policy from the tiny HF checkpoint and records what the tests compare: log-probs and entropy,
one training step (loss, grad norm, the updated HF weights), checkpoint save / resume / reshard. Tests assert
on the returned records; the HF reference is computed in the test process with transformers alone.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from nemo_spatial.models.qwen25_vl.optimizer import sub_optimizers

# One AdamW step with eps >> |grad| is lr * grad / (|grad| + eps) ~ lr * grad: linear in the gradient, so updated
# weights compared across layouts catch a wrongly reduced or scaled gradient (with the default eps the first
# step is ~lr * sign(grad), blind to scale and noisy for gradients near zero).
LR = 0.1
ADAM_EPS = 1.0
LAYOUTS: dict[str, dict[str, Any]] = {
    "tp2": {"tensor_model_parallel_size": 2},
    "tp2_sp": {"tensor_model_parallel_size": 2, "sequence_parallel": True},
    "pp2": {"pipeline_model_parallel_size": 2},
    "dp2": {},
}


def build_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    """4 samples from the real processor: 1, 2, 0 and 1 images; random response tokens of 5..11 tokens."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    generator = torch.Generator().manual_seed(0)
    sizes = [[(56, 56)], [(84, 56), (56, 28)], [], [(28, 84)]]
    rows, pixels, grids, counts, responses = [], [], [], [], []
    for index, image_sizes in enumerate(sizes):
        images = [_image(w, h, generator) for w, h in image_sizes]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": f"question {index}: left or right?"}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        encoded = processor(text=[text], images=images or None, return_tensors="pt")
        response = torch.randint(100, 1500, (5 + 2 * index,), generator=generator)
        rows.append(torch.cat([encoded["input_ids"][0], response]))
        responses.append(len(response))
        counts.append(len(images))
        if images:
            pixels.append(encoded["pixel_values"])
            grids.append(encoded["image_grid_thw"])
    length = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention = torch.zeros(len(rows), length, dtype=torch.bool)
    response_mask = torch.zeros_like(attention)
    for i, (row, n_response) in enumerate(zip(rows, responses, strict=True)):
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = True
        response_mask[i, len(row) - n_response : len(row)] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "response_mask": response_mask,
        "pixel_values": torch.cat(pixels),
        "image_grid_thw": torch.cat(grids),
        "images_per_sample": torch.tensor(counts),
        "advantages": torch.randn(len(rows), generator=generator),
        "old_log_probs": torch.zeros(len(rows), length),
    }


def hf_log_probs_and_entropy(model_dir: Path, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' fp32 token log-probs and entropy, one unpadded sample at a time (the parity reference)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    image_token, video_token = model.config.image_token_id, model.config.video_token_id
    log_probs = torch.zeros(batch["input_ids"].shape)
    entropy = torch.zeros(batch["input_ids"].shape)
    patches = batch["image_grid_thw"].prod(-1)
    image_start = patch_start = 0
    for row, count in enumerate(batch["images_per_sample"].tolist()):
        length = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row : row + 1, :length]
        grid = batch["image_grid_thw"][image_start : image_start + count]
        n_patches = int(patches[image_start : image_start + count].sum())
        pixels = batch["pixel_values"][patch_start : patch_start + n_patches]
        image_start, patch_start = image_start + count, patch_start + n_patches
        kinds = (ids == image_token).int() + 2 * (ids == video_token).int()
        with torch.no_grad():
            logits = model(
                input_ids=ids,
                pixel_values=pixels if count else None,
                image_grid_thw=grid if count else None,
                mm_token_type_ids=kinds,
            ).logits[0]
        log_softmax = torch.log_softmax(logits[:-1], dim=-1)
        log_probs[row, 1:length] = log_softmax.gather(-1, ids[0, 1:, None])[:, 0]
        entropy[row, 1:length] = -(log_softmax.exp() * log_softmax).sum(-1)
    return {"log_probs": log_probs, "entropy": entropy}


def _image(width: int, height: int, generator: torch.Generator) -> Any:
    from PIL import Image

    array = (torch.rand(height, width, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(array)


def stand_in_loss(log_probs: torch.Tensor, batch: Any, scale: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """-sum(A * logp) over response tokens / global token count (the GRPO loss is the algorithms package's)."""
    per_token = -batch.advantages[:, None] * log_probs * batch.response_mask
    loss = per_token.sum() / scale.num_tokens
    return loss, {"response_tokens": float(batch.response_mask.sum())}


def nan_loss(log_probs: torch.Tensor, batch: Any, scale: Any) -> tuple[torch.Tensor, dict[str, float]]:
    loss, metrics = stand_in_loss(log_probs, batch, scale)
    return loss * float("nan"), metrics


class GlobalBatchPolicy:
    """The policy driven with the same GLOBAL batch on every rank, as these scenarios compare layouts: each rank
    passes its DP share (what the trainer builds) and gets the whole batch's log-probs back (all-gathered)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def _local(self, batch: Any) -> Any:
        rank, size = self.policy.data_shard
        return batch.shard(rank, size)

    def _gathered(self, local: torch.Tensor) -> torch.Tensor:
        from megatron.core import parallel_state

        size = self.policy.data_shard[1]
        if size == 1:
            return local
        pieces = [torch.empty_like(local) for _ in range(size)]
        torch.distributed.all_gather(pieces, local, group=parallel_state.get_data_parallel_group())
        return torch.cat(pieces)

    def compute_log_probs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, entropy = self.policy.compute_log_probs(self._local(batch))
        return self._gathered(log_probs), self._gathered(entropy)

    def reference_log_probs(self, batch: Any) -> torch.Tensor:
        return self._gathered(self.policy.reference_log_probs(self._local(batch)))

    def train_step(self, batch: Any, loss_fn: Any) -> dict[str, float]:
        return dict(self.policy.train_step(self._local(batch), loss_fn))


def run_layouts(rank: int, model_dir: str, batch_tensors: dict[str, torch.Tensor], work_dir: str) -> dict[str, Any]:
    """Worker: every phase on this rank; returns the records (rank 0's are the ones the tests read)."""
    from nemo_spatial.parallel import cpu_compat
    from nemo_spatial.parallel.config import ParallelConfig

    cpu_compat.activate(ParallelConfig())  # this spawned process is its own entry point; every layout is gloo
    records: dict[str, Any] = {}
    checkpoints = Path(work_dir)
    for name, parallel in LAYOUTS.items():
        records[name] = _phase(name, parallel, model_dir, batch_tensors, checkpoints)
    records["fp8_providers"] = _fp8_providers(model_dir)
    return records


def _fp8_providers(model_dir: str) -> dict[str, dict[str, Any]]:
    """The Megatron fields each FP8 recipe sets on the bridge's real provider (FP8 itself needs a GPU)."""
    from nemo_spatial.models.qwen25_vl.bridge import make_provider
    from nemo_spatial.models.qwen25_vl.config import FP8Config, PolicyConfig
    from nemo_spatial.parallel.config import ParallelConfig
    from nemo_spatial.parallel.layout import resolve_layout

    layout = resolve_layout(ParallelConfig(tensor_model_parallel_size=2), 2)
    out = {}
    for recipe in ("delayed", "tensorwise", "blockwise"):
        cfg = PolicyConfig(
            hf_path=model_dir, precision="bf16", fp8=FP8Config(enabled=True, recipe=recipe, param_gather=True)
        )
        provider, _ = make_provider(model_dir, cfg, layout, load_weights=False)
        names = ("fp8", "fp8_recipe", "fp8_param", "fp8_amax_history_len", "bf16", "params_dtype", "pipeline_dtype")
        out[recipe] = {name: getattr(provider, name) for name in names}
    return out


def _policy(model_dir: str, parallel: dict[str, Any], micro_batch_size: int) -> Any:
    from nemo_spatial.models.qwen25_vl.config import OptimizerConfig, PolicyConfig
    from nemo_spatial.models.qwen25_vl.policy import MegatronPolicy
    from nemo_spatial.parallel.config import ParallelConfig

    cfg = PolicyConfig(
        hf_path=model_dir,
        micro_batch_size=micro_batch_size,
        max_seq_length=256,
        optimizer=OptimizerConfig(lr=LR, adam_eps=ADAM_EPS),
    )
    return GlobalBatchPolicy(MegatronPolicy(cfg, ParallelConfig(**parallel), seed=1))


def _phase(name: str, parallel: dict[str, Any], model_dir: str, tensors: dict, checkpoints: Path) -> dict[str, Any]:
    from nemo_spatial.batch import PolicyBatch

    batch = PolicyBatch(**tensors)
    started = time.perf_counter()
    policy = _policy(model_dir, parallel, micro_batch_size=2)
    out: dict[str, Any] = {"init_seconds": time.perf_counter() - started}
    out["decay_groups"] = sorted({(g["wd_mult"], g["weight_decay"]) for g in policy.optimizer.param_groups})
    out["decayed_params"] = sum(len(g["params"]) for g in policy.optimizer.param_groups if g["weight_decay"] > 0)
    out["initial_weights"] = dict(policy.named_hf_weights()) if name == "tp2" else None
    out["log_probs"], out["entropy"] = policy.compute_log_probs(batch)
    if name == "tp2":
        _checkpoint_cases(policy, batch, checkpoints, out)
    step_started = time.perf_counter()
    out["metrics"] = policy.train_step(batch, stand_in_loss)
    out["step_seconds"] = time.perf_counter() - step_started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["weights"] = dict(policy.named_hf_weights())
    out["log_probs_after"], _ = policy.compute_log_probs(batch)
    out["reference"] = policy.reference_log_probs(batch)
    if name == "tp2":
        policy.save_checkpoint(str(checkpoints / "after_step_tp2"))
    else:
        policy.load_checkpoint(str(checkpoints / "after_step_tp2"))
        out["resharded_log_probs"], _ = policy.compute_log_probs(batch)
    if name == "dp2":
        before = dict(policy.named_hf_weights())
        out["nan_metrics"] = policy.train_step(batch, nan_loss)
        after = dict(policy.named_hf_weights())
        out["nan_changed"] = [key for key in before if not torch.equal(before[key], after[key])]
    return out


def _checkpoint_cases(policy: Any, batch: Any, checkpoints: Path, out: dict[str, Any]) -> None:
    """At TP=2: micro-batch 1 x 4 == 4 x 1, resume == the step in memory, an interrupted save keeps the last one."""
    start = str(checkpoints / "start_tp2")
    policy.save_checkpoint(start)
    _interrupted_save(policy, start)
    out["interrupted_save_left"] = sorted(os.listdir(checkpoints))
    results = {}
    for label, micro_batch_size in (("mbs1", 1), ("mbs4", 4)):
        policy.load_checkpoint(start)
        policy.cfg.micro_batch_size = micro_batch_size
        results[label] = _step_record(policy, batch)
    out["accumulation"] = results
    out["resume"] = _resume_cases(policy, batch, checkpoints)  # continues from mbs4's step 1
    policy.load_checkpoint(start)
    policy.cfg.micro_batch_size = 2


def _resume_cases(policy: Any, batch: Any, checkpoints: Path) -> dict[str, Any]:
    """Step 2 in memory vs after a resume from step 1, and the step counts around a model-only resume.

    The resumed step starts from a model-only load (fresh Adam), so Adam's moments can only come from the
    checkpoint: step 2 is the first step whose update depends on them (step 1's are zero).
    """
    step1, model_only = str(checkpoints / "step1_tp2"), str(checkpoints / "model_only_step2_tp2")
    policy.save_checkpoint(step1)
    cases: dict[str, Any] = {"continued": _step_record(policy, batch)}
    policy.load_checkpoint(step1, load_optimizer=False)
    cases["counts_after_model_only_load"] = _step_counts(policy)
    policy.load_checkpoint(step1)
    cases["counts_after_resume"] = _step_counts(policy)
    cases["resumed"] = _step_record(policy, batch)
    cases["offload"] = _offload_cases(policy, batch, step1)
    # Problem sequence: resume with the model only, train, save, resume: Adam has taken 1 step, the policy 2.
    policy.load_checkpoint(step1, load_optimizer=False)
    cases["fresh_adam"] = _step_record(policy, batch)
    policy.save_checkpoint(model_only)
    policy.load_checkpoint(model_only)
    cases["counts_after_model_only_history"] = _step_counts(policy)
    return cases


def _offload_cases(policy: Any, batch: Any, step1: str) -> dict[str, Any]:
    """Step 2 after an offload and reload (policy.offload_to_host: on CPU the grad buffers are freed, the optimizer
    state stays; then a HostOffload that also copies the optimizer's tensors out and back, as on a GPU), to be
    compared with step 2 without; and what the policy holds while offloaded."""
    from nemo_spatial.models.qwen25_vl.offload import HostOffload

    inner = policy.policy
    out: dict[str, Any] = {}
    policy.load_checkpoint(step1)
    weights = dict(policy.named_hf_weights())
    out["offload_metrics"] = policy.offload_to_host()
    out["offload_again"] = policy.offload_to_host()  # idempotent
    out["grad_bytes_offloaded"] = [b.grad_data.untyped_storage().nbytes() for b in inner.offload._grad_buffers()]
    out["weights_unchanged_offloaded"] = all(torch.equal(weights[k], v) for k, v in policy.named_hf_weights())
    try:
        policy.train_step(batch, stand_in_loss)
        out["train_while_offloaded"] = "trained"
    except RuntimeError as error:
        out["train_while_offloaded"] = str(error)
    out["reload_metrics"] = policy.reload_to_device()
    out["grad_bytes_reloaded"] = [b.grad_data.untyped_storage().nbytes() for b in inner.offload._grad_buffers()]
    out["grads_zero_reloaded"] = all(bool((b.grad_data == 0).all()) for b in inner.offload._grad_buffers())
    out["grad_buffer_bytes"] = [b.grad_data.numel() * b.grad_data.element_size() for b in inner.offload._grad_buffers()]
    out["freed_path"] = _step_record(policy, batch)
    policy.load_checkpoint(step1)
    copying = HostOffload(inner.chunks, inner.optimizer, copy_state=True)
    adam = [v for sub in sub_optimizers(inner.optimizer) for s in sub.optimizer.state.values() for v in s.values()]
    before = [t.data_ptr() for t in adam if t.numel() > 1]
    out["copy_metrics"] = copying.offload()
    out["state_at_old_address"] = sorted({t.data_ptr() in before for t in adam if t.numel() > 1})
    out["state_numel"] = sum(t.numel() for t in adam if t.numel() > 1)
    copying.reload(torch.device("cpu"))
    out["copied_path"] = _step_record(policy, batch)
    return out


def _step_record(policy: Any, batch: Any) -> dict[str, Any]:
    metrics = policy.train_step(batch, stand_in_loss)
    return {"metrics": metrics, "weights": dict(policy.named_hf_weights())}


def _step_counts(policy: Any) -> dict[str, Any]:
    """The policy step and every torch AdamW step counter of this rank (one value when they agree)."""
    adam = {float(state["step"]) for sub in sub_optimizers(policy.optimizer) for state in sub.optimizer.state.values()}
    return {"policy": policy.step, "adam": sorted(adam)}


def _interrupted_save(policy: Any, existing: str) -> None:
    """A save into `existing` that dies after writing part of its shards must leave `existing` loadable."""
    from megatron.core import dist_checkpointing

    original = dist_checkpointing.save

    def dying_save(state: Any, directory: str, **kwargs: Any) -> None:
        (Path(directory) / f"shard_of_rank_{torch.distributed.get_rank()}").write_text("partial")
        raise RuntimeError("simulated crash in the middle of a checkpoint save")

    dist_checkpointing.save = dying_save
    try:
        policy.save_checkpoint(existing)
    except RuntimeError:
        pass
    finally:
        dist_checkpointing.save = original
    torch.distributed.barrier()
