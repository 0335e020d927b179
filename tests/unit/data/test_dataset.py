"""Prompt streams: seeded order, resumable position, parallel workers, bad rows, over-long prompts, model inputs."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nemo_spatial.data import DataError, PromptStream
from nemo_spatial.data.prompts import R1V_INSTRUCTION


def _open(cfg, model_dir: Path, split: str = "train") -> PromptStream:
    return PromptStream.open(cfg, split, processor_path=str(model_dir))


def _rows(batch) -> list[int]:
    return [sample.row for sample in batch]


def test_order_is_a_seeded_permutation_per_epoch(data_cfg, tiny_model_dir: Path) -> None:
    stream = _open(data_cfg(seed=5), tiny_model_dir)
    first, second = _rows(stream.next_batch(18)), _rows(stream.next_batch(18))
    assert first == np.random.default_rng([5, 0]).permutation(18).tolist()
    assert second == np.random.default_rng([5, 1]).permutation(18).tolist() and first != second
    assert stream.state_dict()["epoch"] == 2 and stream.state_dict()["offset"] == 0
    assert _rows(_open(data_cfg(seed=5), tiny_model_dir).next_batch(6)) == first[:6]
    assert _rows(_open(data_cfg(seed=6), tiny_model_dir).next_batch(6)) != first[:6]
    assert _rows(_open(data_cfg(shuffle=False), tiny_model_dir).next_batch(6)) == list(range(6))


def test_a_resumed_stream_continues_with_the_next_rows(data_cfg, tiny_model_dir: Path) -> None:
    stream = _open(data_cfg(), tiny_model_dir)
    stream.next_batch(7)
    stream.next_batch(7)
    state = stream.state_dict()
    expected = stream.next_batch(7)  # crosses the epoch boundary (rows 14..20 of 18 per epoch)
    resumed = _open(data_cfg(), tiny_model_dir)
    resumed.load_state_dict(state)
    got = resumed.next_batch(7)
    assert _rows(got) == _rows(expected)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(got, expected, strict=True))
    assert resumed.state_dict() == stream.state_dict() == {**state, "epoch": 1, "offset": 3}


def test_resuming_with_other_data_or_seed_is_refused(data_cfg, tiny_model_dir: Path) -> None:
    state = _open(data_cfg(), tiny_model_dir).state_dict()
    with pytest.raises(DataError, match="data.seed=1"):
        _open(data_cfg(seed=2), tiny_model_dir).load_state_dict(state)
    with pytest.raises(DataError, match="for 99 rows"):
        _open(data_cfg(), tiny_model_dir).load_state_dict({**state, "num_rows": 99})


@pytest.mark.slow
def test_worker_processes_give_the_same_samples(data_cfg, tiny_model_dir: Path) -> None:
    serial = _open(data_cfg(), tiny_model_dir).next_batch(10)
    parallel_stream = _open(data_cfg(num_workers=2), tiny_model_dir)
    parallel = parallel_stream.next_batch(10)
    parallel_stream.close()
    assert _rows(parallel) == _rows(serial)
    for a, b in zip(parallel, serial, strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)
        assert a.raw_prompt_ids == b.raw_prompt_ids


def _with_bad_rows(synth_dir: Path, out: Path, bad: dict[int, object]) -> Path:
    table = pq.read_table(synth_dir / "train-00000-of-00001.parquet").slice(0, 6)
    images = table.column("images").to_pylist()
    for index, value in bad.items():
        images[index] = value
    table = table.set_column(table.schema.get_field_index("images"), "images", pa.array(images, table["images"].type))
    pq.write_table(table, out)
    return out


def _png(size: tuple[int, int]) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def test_bad_rows_are_skipped_counted_and_logged(
    data_cfg, tiny_model_dir: Path, synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = _with_bad_rows(
        synth_dir, tmp_path / "bad.parquet", {2: {"bytes": b"garbage", "path": None}, 4: _png((900, 3))}
    )
    stream = _open(data_cfg(train_files=str(file), shuffle=False), tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="nemo_spatial.data.dataset"):
        batch = stream.next_batch(4)
    assert _rows(batch) == [0, 1, 3, 5] and stream.stats["skipped_image"] == 2
    assert "row 2: cannot decode" in caplog.text and "aspect ratio above 200" in caplog.text
    assert stream.metrics()["data/skipped_image"] == 2.0
    assert stream.state_dict()["epoch"] == 1 and stream.state_dict()["offset"] == 0  # skipped rows count as read


def test_a_pass_without_any_usable_row_stops_with_the_reason(
    data_cfg, tiny_model_dir: Path, synth_dir: Path, tmp_path: Path
) -> None:
    broken = {i: {"bytes": b"x", "path": None} for i in range(6)}
    file = _with_bad_rows(synth_dir, tmp_path / "allbad.parquet", broken)
    with pytest.raises(DataError, match="6 rows in a row could not be used.*'image'.*cannot decode"):
        _open(data_cfg(train_files=str(file)), tiny_model_dir).next_batch(2)


def _lengths(data_cfg, model_dir: Path) -> list[int]:
    return [len(s.input_ids) for s in _open(data_cfg(shuffle=False), model_dir).next_batch(18)]


def test_overlong_prompts_filter_truncate_or_error(data_cfg, tiny_model_dir: Path, synth_dir: Path) -> None:
    questions = pq.read_table(synth_dir / "train-00000-of-00001.parquet").column("question_with_options").to_pylist()
    lengths = _lengths(data_cfg, tiny_model_dir)
    limit = sorted(lengths)[len(lengths) // 2]
    too_long = sum(n > limit for n in lengths)
    assert too_long > 0

    filtered = _open(data_cfg(shuffle=False, max_prompt_length=limit), tiny_model_dir)
    kept = list(filtered.one_pass())
    assert len(kept) == 18 - too_long and filtered.stats["skipped_overlong"] == too_long

    truncating = _open(data_cfg(shuffle=False, max_prompt_length=limit, overlong="truncate"), tiny_model_dir)
    samples = list(truncating.one_pass())
    assert len(samples) == 18 and truncating.stats["truncated"] == too_long
    tokenizer = truncating.dataset.processor.processor.tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for sample, full in zip(samples, lengths, strict=True):
        assert len(sample.input_ids) == min(full, limit) and sample.truncated_tokens == max(0, full - limit)
        n_image = int((sample.input_ids == pad).sum())
        assert n_image == int(sample.image_grid_thw.prod()) // 4  # the image is never cut
        assert _expand(sample.raw_prompt_ids, pad, n_image) == sample.input_ids.tolist()
        # the question and its options stay, with the assistant header after them
        assert tokenizer.decode(sample.raw_prompt_ids).endswith(
            f"{questions[sample.row]}<|im_end|>\n<|im_start|>assistant\n"
        )

    with pytest.raises(ValueError, match="data.overlong=filter"):
        _open(data_cfg(shuffle=False, max_prompt_length=limit, overlong="error"), tiny_model_dir).next_batch(18)
    with pytest.raises(DataError, match="'overlong'"):  # not even the image and the template fit
        _open(data_cfg(max_prompt_length=20, overlong="truncate"), tiny_model_dir).next_batch(1)


def _expand(ids: list[int], pad: int, n: int) -> list[int]:
    out: list[int] = []
    for token in ids:
        out.extend([pad] * n if token == pad else [token])
    return out


def test_samples_are_what_the_model_expects(data_cfg, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    pad = model.config.image_token_id
    for sample in _open(data_cfg(shuffle=False), tiny_model_dir).next_batch(3):
        n_image = int((sample.input_ids == pad).sum())
        assert n_image == int(sample.image_grid_thw.prod()) // 4 == sample.pixel_values.shape[0] // 4
        assert sample.raw_prompt_ids.count(pad) == 1
        assert _expand(sample.raw_prompt_ids, pad, n_image) == sample.input_ids.tolist()
        with torch.no_grad():
            features = model.model.get_image_features(sample.pixel_values, sample.image_grid_thw).pooler_output
            assert sum(f.shape[0] for f in features) == n_image  # one feature per image token


def test_r1v_prompts_and_ground_truth(data_cfg, tiny_model_dir: Path) -> None:
    cfg = data_cfg(
        shuffle=False, prompt_format="r1v", prompt_key="question_with_options", answer_key="answer_option_text_only"
    )
    sample = _open(cfg, tiny_model_dir).next_batch(1)[0]
    instruction = R1V_INSTRUCTION.replace("<image>", "").strip()
    assert f"<|vision_end|> {instruction} Where is the" in sample.prompt_text
    assert sample.ground_truth.startswith("(") and "<scene>" not in sample.ground_truth
    assert "Image size:" in sample.problem  # the reward still gets the problem column
    assert sample.metadata["category"] == "relation"


def test_validation_pass_is_in_file_order_and_leaves_the_position(data_cfg, tiny_model_dir: Path) -> None:
    stream = _open(data_cfg(), tiny_model_dir, split="val")
    assert [s.row for s in stream.one_pass()] == list(range(9))
    assert stream.state_dict()["offset"] == 0 and not stream.shuffle


@pytest.mark.parametrize(
    "overrides",
    [{"overlong": "truncate", "max_prompt_length": 60}, {"min_pixels": 300 * 200, "max_pixels": 517 * 389}],
)
def test_a_stream_without_pixels_then_the_pixel_preparer_give_the_full_samples(
    data_cfg, tiny_model_dir: Path, overrides: dict
) -> None:
    """The GRPO driver's light stream (grid from the image size, no image processor) + a rank's PixelPreparer
    give exactly what the processor's own call gives: tokens, grid, patches (so the losses cannot change)."""
    from nemo_spatial.data import PixelPreparer

    cfg = data_cfg(shuffle=False, **overrides)
    full = list(_open(cfg, tiny_model_dir).one_pass())[:6]
    light = list(PromptStream.open(cfg, "train", processor_path=str(tiny_model_dir), pixels=False).one_pass())[:6]
    assert all(s.pixel_values is None for s in light)
    preparer = PixelPreparer(str(tiny_model_dir))
    prepared = preparer(dict(enumerate(light)))
    assert preparer.prepared == 6 and preparer(prepared) == prepared and preparer.prepared == 6  # once each
    assert any(s.truncated_tokens for s in full) == ("max_prompt_length" in overrides)
    for a, b in zip(full, prepared.values(), strict=True):
        assert a.row == b.row and a.raw_prompt_ids == b.raw_prompt_ids and a.truncated_tokens == b.truncated_tokens
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.image_grid_thw, b.image_grid_thw)
        assert torch.equal(a.pixel_values, b.pixel_values)
