"""The export's parts without Megatron: shards and index, staging, the checks before writing, the model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nemo_spatial.errors import UserError
from nemo_spatial.export.card import last_validation_reward, training_method
from nemo_spatial.export.files import ShardWriter, base_dtype, base_files, base_weights, staged_output
from nemo_spatial.export.source import check_free_space, check_output, resolve_source


def test_shards_split_at_the_size_limit_and_the_index_names_every_tensor(tmp_path):
    tensors = {f"t{i}": torch.full((250,), float(i)) for i in range(5)}  # 1,000 bytes each
    writer = ShardWriter(tmp_path, max_shard_bytes=2_000)
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    shards = writer.finish()
    assert [p.name for p in shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5_000
    assert index["weight_map"] == {"t0": shards[0].name, "t1": shards[0].name, "t2": shards[1].name,
                                   "t3": shards[1].name, "t4": shards[2].name}  # fmt: skip
    loaded = {k: v for p in shards for k, v in load_file(p).items()}
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="t1 exported twice"):
        writer.add("t1", tensors["t1"])


def test_an_interrupted_export_leaves_no_output_and_overwrite_replaces_only_at_the_end(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_output(out, overwrite=False) as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("killed mid-export")
    assert not out.exists() and not list(tmp_path.iterdir())
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old export stays until the new one is complete
        raise RuntimeError("killed mid-export")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with staged_output(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_output_and_disk_checks_say_what_to_do(tmp_path):
    check_output(tmp_path / "missing", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="full exists and is not empty; choose another --out or pass --overwrite"):
        check_output(tmp_path / "full", overwrite=False)
    check_output(tmp_path / "full", overwrite=True)
    check_free_space(tmp_path / "new", 1_000, free=1_050)
    with pytest.raises(UserError, match=r"needs 2.1 GB and 1.0 GB is free; free space there or choose --out"):
        check_free_space(tmp_path / "new", 2 * 10**9, free=10**9)


def test_what_is_not_a_complete_checkpoint(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_source(tmp_path / "nowhere")
    with pytest.raises(UserError, match="is not a policy checkpoint"):
        resolve_source(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="has no complete checkpoint"):
        resolve_source(tmp_path)
    unfinished = tmp_path / "checkpoints" / "step_000004"  # no COMPLETE marker
    unfinished.mkdir()
    with pytest.raises(UserError, match="step_000004 is an incomplete checkpoint.*export a complete checkpoint"):
        resolve_source(unfinished)


def test_base_model_files_and_shapes(tiny_model_dir: Path):
    names = {p.name for p in base_files(tiny_model_dir)}
    assert "config.json" in names and "tokenizer.json" in names and "model.safetensors" not in names
    weights = base_weights(tiny_model_dir)
    assert len(weights.shapes) == 57 and weights.shapes["lm_head.weight"] == (2048, 128)
    assert weights.nbytes("bfloat16") * 2 == weights.nbytes("float32")
    assert base_dtype(tiny_model_dir) == "float32"


def test_the_card_names_the_method_and_the_last_validation_reward(tmp_path):
    assert training_method({"reward": {"preset": "spatialthinker"}}).startswith("SpatialThinker GRPO")
    assert training_method({"reward": {"preset": "r1v"}}).startswith("vanilla GRPO")
    assert training_method({"sft": {}, "reward": {"preset": "r1v"}}).startswith("SFT")
    lines = [{"step": 1, "val/reward/overall/mean": 0.1}, {"step": 2}, {"step": 3, "val/reward/overall/mean": 0.3},
             {"step": 5, "val/reward/overall/mean": 0.5}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 6, "val')
    assert last_validation_reward(tmp_path, 4) == (3, 0.3)
    assert last_validation_reward(tmp_path, 9) == (5, 0.5)
    assert last_validation_reward(tmp_path / "none", 9) is None
