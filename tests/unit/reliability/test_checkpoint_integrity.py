"""Checkpoints record sizes and BLAKE3 digests; resume verifies them, names a bad file, falls back to the newest
intact checkpoint, or fails naming trainer.resume_from; a truncated trainer_state.pt names its path; NaN weights are
refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from nemo_spatial.checkpoint import (
    STATE_FILE,
    TrainerState,
    load_trainer_state,
    save_checkpoint,
    select_resume_checkpoint,
)
from nemo_spatial.checkpoint_manifest import MANIFEST_FILE, CheckpointError

SHARD = "policy/__0_0.distcp"


def _policy_writer(step: int):  # type: ignore[no-untyped-def]
    def save(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "__0_0.distcp").write_bytes(bytes([step]) * 4096)
        (path / "nemo_spatial_policy.json").write_text(json.dumps({"step": step}))

    return save


def _save(run_dir: Path, *steps: int) -> None:
    for step in steps:
        save_checkpoint(run_dir, TrainerState(step=step), _policy_writer(step), keep_last=5)


def test_the_manifest_records_every_file_with_its_size_and_digest(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    manifest = json.loads((tmp_path / "checkpoints/step_000001" / MANIFEST_FILE).read_text())
    assert manifest["algorithm"] == "blake3"
    assert set(manifest["files"]) == {STATE_FILE, SHARD, "policy/nemo_spatial_policy.json"}
    assert manifest["files"][SHARD]["size"] == 4096 and len(manifest["files"][SHARD]["blake3"]) == 64
    assert select_resume_checkpoint(tmp_path) == tmp_path / "checkpoints/step_000001"


def test_a_truncated_shard_falls_back_to_the_newest_intact_checkpoint_with_a_warning(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    _save(tmp_path, 1, 2)
    shard = tmp_path / "checkpoints/step_000002" / SHARD
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert select_resume_checkpoint(tmp_path) == tmp_path / "checkpoints/step_000001"
    assert f"{shard} has 100 bytes, 4096 when saved" in caplog.text


def test_a_same_size_corruption_is_found_and_no_intact_checkpoint_names_the_options(tmp_path: Path) -> None:
    _save(tmp_path, 1, 2)
    for step in (1, 2):
        shard = tmp_path / f"checkpoints/step_00000{step}" / SHARD
        data = bytearray(shard.read_bytes())
        data[2000] ^= 0xFF
        shard.write_bytes(bytes(data))
    expected = (
        r"step_000002/policy/__0_0.distcp has changed since it was saved.*"
        r"step_000001/policy/__0_0.distcp has changed.*trainer.resume_from=step_N.*trainer.resume=false"
    )
    with pytest.raises(CheckpointError, match=expected):
        select_resume_checkpoint(tmp_path)


def test_resume_from_picks_a_checkpoint_and_is_itself_verified(tmp_path: Path) -> None:
    _save(tmp_path, 1, 2)
    assert select_resume_checkpoint(tmp_path, "step_000001") == tmp_path / "checkpoints/step_000001"
    (tmp_path / "checkpoints/step_000001" / SHARD).unlink()
    with pytest.raises(CheckpointError, match="trainer.resume_from=step_000001: .*__0_0.distcp is missing"):
        select_resume_checkpoint(tmp_path, "step_000001")
    with pytest.raises(CheckpointError, match="step_000009 is not a complete checkpoint .*step_000001, step_000002"):
        select_resume_checkpoint(tmp_path, "step_000009")


def test_a_truncated_trainer_state_without_a_manifest_names_its_path_not_a_bare_eof(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    checkpoint = tmp_path / "checkpoints/step_000001"
    (checkpoint / MANIFEST_FILE).unlink()  # as written before manifests existed
    state = checkpoint / STATE_FILE
    state.write_bytes(state.read_bytes()[:10])
    with pytest.raises(CheckpointError, match=f"{state} cannot be read .*trainer.resume_from"):
        load_trainer_state(checkpoint)
    with pytest.raises(CheckpointError, match=f"no intact checkpoint .*{state} cannot be read"):
        select_resume_checkpoint(tmp_path)


def test_non_finite_weights_are_refused_naming_a_parameter(tmp_path: Path) -> None:
    from nemo_spatial.models.qwen25_vl.checkpoint import refuse_non_finite_weights

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        refuse_non_finite_weights(tmp_path, [model])
        with torch.no_grad():
            model[1].weight[0, 0] = float("nan")
        with pytest.raises(
            CheckpointError, match=r"non-finite weights \(rank 0: 1.weight has NaN or inf\).*resume_from"
        ):
            refuse_non_finite_weights(tmp_path, [model])
    finally:
        dist.destroy_process_group()
