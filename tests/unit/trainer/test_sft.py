"""The SFT run's pieces without a model: its batch, its config, and where policy.init_checkpoint points."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nemo_spatial.checkpoint_manifest import CheckpointError, write_manifest
from nemo_spatial.data.sft_target import sft_target
from nemo_spatial.errors import ConfigError
from nemo_spatial.generation.types import GeneratorRestartedError
from nemo_spatial.models.qwen25_vl.checkpoint import MARKER, resolve_init_checkpoint
from nemo_spatial.sft_config import load_sft_config
from nemo_spatial.sft_trainer import SFTTrainer, build_sft_batch, sft_loss_fn
from tests.unit.trainer.loop_fakes import FakeGenerator, FakePolicy

TRUTH = '<scene>{"objects": [{"id": "cat.1", "bbox": [1, 2, 3, 4]}], "relationships": []}</scene><answer>(A) x</answer>'
EOS, PAD = 99, 0


def _encode(text: str) -> list[int]:
    return [1 + ord(c) % 90 for c in text]


def _prompt(row: int, length: int, truth: str = TRUTH) -> SimpleNamespace:
    patches = 4
    return SimpleNamespace(
        row=row, ground_truth=truth, input_ids=torch.arange(10, 10 + length),
        pixel_values=torch.full((patches, 3), float(row)), image_grid_thw=torch.tensor([[1, 2, 2]]),
    )  # fmt: skip


def test_rows_are_prompt_then_target_then_eos_and_only_the_target_is_trained():
    target = [*_encode(sft_target(TRUTH)), EOS]
    built = build_sft_batch(
        [_prompt(0, 5), _prompt(1, 8)], _encode, EOS, PAD, target_format="spatialthinker", max_length=4096, multiple=1
    )
    batch = built.batch
    assert built.skipped == 0 and batch.batch_size == 2
    assert batch.input_ids[0, :5].tolist() == list(range(10, 15))
    assert batch.input_ids[0, 5 : 5 + len(target)].tolist() == target
    assert batch.response_mask[0].nonzero().flatten().tolist() == list(range(5, 5 + len(target)))
    assert batch.response_mask[1].nonzero().flatten().tolist() == list(range(8, 8 + len(target)))
    assert batch.input_ids[0, 5 + len(target) :].eq(PAD).all() and not batch.attention_mask[0, 5 + len(target) :].any()
    assert batch.pixel_values[4:].eq(1.0).all()  # each row keeps its own image
    # The loss function reads the log-probs and the target mask only.
    log_probs = torch.full(batch.input_ids.shape, -2.0)
    loss, _ = sft_loss_fn(log_probs, batch, None)
    assert loss.item() == pytest.approx(2.0)


def test_unusable_and_overlong_samples_are_left_out_and_the_rest_trimmed_to_the_multiple():
    prompts = [_prompt(0, 5), _prompt(1, 5, truth="(A) x"), _prompt(2, 3000), _prompt(3, 5), _prompt(4, 6)]
    built = build_sft_batch(prompts, _encode, EOS, PAD, target_format="spatialthinker", max_length=1000, multiple=2)
    assert built.batch.batch_size == 2 and built.skipped == 3  # rows 1 (no scene), 2 (too long), 4 (the multiple)
    assert [p.row for p in built.prompts] == [0, 3]
    assert any("max_seq_length=1000" in e for e in built.errors) and any(
        "answer_option_text" in e for e in built.errors
    )
    none = build_sft_batch(prompts[1:3], _encode, EOS, PAD, target_format="spatialthinker", max_length=1000, multiple=1)
    assert none.batch is None and none.skipped == 2


def test_configs(repo_root):
    tiny = load_sft_config(repo_root / "conf/debug/tiny_cpu_sft.yaml")
    assert tiny.policy.reference == "none"  # no KL in SFT: no reference copy
    for size in ("3b_stvqa7k_1n4g_tp1", "7b_stvqa7k_1n4g_tp2"):
        cfg = load_sft_config(repo_root / f"conf/recipes/sft_qwen25vl{size}.yaml")
        assert cfg.data.answer_key == "answer_option_text" and cfg.sft.target == "spatialthinker"
        assert cfg.policy.optimizer.lr_warmup_steps > 0 and cfg.policy.optimizer.lr_schedule == "cosine"
    with pytest.raises(ConfigError, match="sft.batch_size=6 is not a multiple of policy.micro_batch_size=4"):
        load_sft_config(repo_root / "conf/debug/tiny_cpu_sft.yaml", ["sft.batch_size=6"])
    with pytest.raises(ConfigError, match="sft.target"):
        load_sft_config(None, ["sft.target=free"])
    with pytest.raises(ConfigError, match="did you mean 'sft.val_every'"):
        load_sft_config(None, ["sft.val_evry=3"])


def _policy_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"step": 3}))
    return path


def test_init_checkpoint_accepts_a_run_a_checkpoint_or_a_policy_directory(tmp_path):
    run = tmp_path / "run"
    policy = _policy_dir(run / "checkpoints" / "step_000004" / "policy")
    (run / "checkpoints" / "step_000004" / "COMPLETE").write_text("step 4\n")
    (run / "checkpoints" / "latest").write_text("step_000004\n")
    assert resolve_init_checkpoint(run) == policy
    assert resolve_init_checkpoint(run / "checkpoints" / "step_000004") == policy
    assert resolve_init_checkpoint(policy) == policy
    with pytest.raises(ConfigError, match="policy.init_checkpoint=.*is not a policy checkpoint"):
        resolve_init_checkpoint(tmp_path / "nothing")
    # Verified as on resume: the checkpoint's manifest must hold for every file.
    write_manifest(run / "checkpoints" / "step_000004")
    assert resolve_init_checkpoint(run) == policy
    (policy / MARKER).write_text(json.dumps({"step": 5}))  # the same size, another digest
    for location in (run, policy):
        with pytest.raises(CheckpointError, match=f"policy.init_checkpoint=.*{MARKER} has changed since it was saved"):
            resolve_init_checkpoint(location)


class _RestartsDuringThePush(FakeGenerator):
    """A generation server that dies and comes back (version 0) during its first weight push."""

    def update_weights(self, named_tensors, version):  # type: ignore[no-untyped-def]
        if not self.restart_on_calls:
            self.restart_on_calls.add(-1)  # once
            raise GeneratorRestartedError(f"restarted during the push of version {version}")
        return super().update_weights(named_tensors, version)


def test_the_sft_weight_sync_is_the_grpo_refit_and_survives_a_restarted_server(repo_root, tmp_path):
    cfg = load_sft_config(repo_root / "conf/debug/tiny_cpu_sft.yaml", [f"run.output_dir={tmp_path}"])
    generator = _RestartsDuringThePush()
    trainer = SFTTrainer(
        cfg,
        FakePolicy(),
        None,
        None,
        _encode,
        EOS,
        PAD,
        None,
        tmp_path,
        generator=generator,  # type: ignore[arg-type]
    )
    assert "sync/seconds" in trainer._sync_weights()  # step 0 pushes (policy.init_checkpoint may differ from hf_path)
    assert generator.pushes == [1]  # pushed again after the restart
    assert trainer._sync_weights() == {}  # it holds these weights: nothing to push
    trainer.step = 3
    trainer._sync_weights()
    assert generator.pushes == [1, 4]
