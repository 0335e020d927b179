"""PolicyBatch: validation of shapes and images, sample selection with images (held once per distinct image),
length-sorted micro-batches."""

from __future__ import annotations

import pytest
import torch

from nemo_spatial.batch import PolicyBatch, make_micro_batches, scatter_rows


def _batch(lengths: list[int], images: list[int], width: int = 12) -> PolicyBatch:
    """Right-padded rows; image i of sample b has a (1, 2, 2 + i) grid whose patches are filled with b + i / 10."""
    batch = len(lengths)
    input_ids = torch.arange(batch * width).reshape(batch, width) + 1
    attention = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    response = attention & (torch.arange(width)[None, :] >= 2)
    grids, pixels = [], []
    for sample, count in enumerate(images):
        for i in range(count):
            grid = torch.tensor([1, 2, 2 + i])
            grids.append(grid)
            pixels.append(torch.full((int(grid.prod()), 3), sample + i / 10))
    return PolicyBatch(
        input_ids=input_ids * attention,
        attention_mask=attention,
        response_mask=response,
        pixel_values=torch.cat(pixels) if pixels else None,
        image_grid_thw=torch.stack(grids) if grids else None,
        images_per_sample=torch.tensor(images) if grids else None,
        advantages=torch.arange(batch, dtype=torch.float32),
        old_log_probs=torch.randn(batch, width),
        rollout_log_probs=torch.randn(batch, width),
    )


def test_select_keeps_each_samples_own_images() -> None:
    batch = _batch([5, 9, 7], images=[1, 2, 0])
    picked = batch.select([1, 0], length=10)
    assert picked.input_ids.shape == (2, 10) and torch.equal(picked.input_ids[0, :9], batch.input_ids[1, :9])
    assert picked.images_per_sample.tolist() == [2, 1]
    assert picked.image_grid_thw.tolist() == [[1, 2, 2], [1, 2, 3], [1, 2, 2]]
    assert picked.pixel_values[:, 0].unique().tolist() == pytest.approx([0.0, 1.0, 1.1])
    assert picked.rollout_log_probs.shape == (2, 10)
    assert torch.equal(picked.rollout_log_probs[0, :9], batch.rollout_log_probs[1, :9])
    assert picked.advantages.tolist() == [1.0, 0.0]


def test_samples_without_images_carry_no_pixels() -> None:
    picked = _batch([5, 9, 7], images=[1, 2, 0]).select([2])
    assert picked.pixel_values is None and picked.image_grid_thw is None


def test_micro_batches_are_length_sorted_and_padded_to_their_own_longest_rounded_up() -> None:
    batch = _batch([3, 11, 6, 10], images=[1, 1, 1, 1])
    micro = make_micro_batches(batch, micro_batch_size=2, multiple=4)
    assert [mb.rows.tolist() for mb in micro] == [[0, 2], [3, 1]]
    assert [mb.batch.input_ids.shape[1] for mb in micro] == [8, 12]
    assert all(mb.batch.attention_mask.sum() == batch.attention_mask[mb.rows].sum() for mb in micro)


def test_scatter_rows_puts_micro_batch_results_back_in_batch_order() -> None:
    batch = _batch([3, 11, 6, 10], images=[0, 0, 0, 0])
    micro = make_micro_batches(batch, micro_batch_size=3)
    pieces = [(mb.rows, mb.batch.input_ids.float()) for mb in micro]
    assert torch.equal(scatter_rows(pieces, 4, 12), batch.input_ids.float())


def test_shard_takes_a_contiguous_share_and_rejects_an_uneven_split() -> None:
    batch = _batch([3, 4, 5, 6], images=[1, 0, 2, 1])
    second = batch.shard(1, 2)
    assert torch.equal(second.input_ids, batch.input_ids[2:]) and second.images_per_sample.tolist() == [2, 1]
    with pytest.raises(ValueError, match="4 samples does not split over 3"):
        batch.shard(0, 3)


def test_invalid_batches_fail_with_the_reason() -> None:
    good = _batch([4, 6], images=[1, 1])
    with pytest.raises(ValueError, match="response_mask marks padding"):
        PolicyBatch(good.input_ids, good.attention_mask, good.attention_mask | True)
    with pytest.raises(ValueError, match="response_mask must have the shape of input_ids"):
        PolicyBatch(good.input_ids, good.attention_mask, good.response_mask[:, :3])
    with pytest.raises(ValueError, match="position 0"):
        PolicyBatch(good.input_ids, good.attention_mask, good.attention_mask)
    with pytest.raises(ValueError, match="describes 8 patches; pixel_values has 7"):
        PolicyBatch(good.input_ids, good.attention_mask, good.response_mask, good.pixel_values[:7], good.image_grid_thw)
    with pytest.raises(ValueError, match="3 images for 2 samples: pass images_per_sample"):
        grid = torch.tensor([[1, 2, 2]] * 3)
        PolicyBatch(good.input_ids, good.attention_mask, good.response_mask, torch.zeros(12, 3), grid)
    with pytest.raises(ValueError, match="rollout_log_probs must have the shape of input_ids"):
        PolicyBatch(good.input_ids, good.attention_mask, good.response_mask, rollout_log_probs=torch.zeros(3, 12))
    with pytest.raises(ValueError, match="image_index must name images 0..0"):
        PolicyBatch(
            good.input_ids, good.attention_mask, good.response_mask, good.pixel_values[:4], good.image_grid_thw[:1],
            image_index=torch.tensor([0, 1]),
        )  # fmt: skip


def _shared_image_batch() -> PolicyBatch:
    """Two prompts x 3 samples: the samples of a prompt point at its one image (image_index), held once."""
    base = _batch([4, 5, 6, 7, 8, 9], images=[1] * 6)
    grids = torch.tensor([[1, 2, 2], [1, 2, 3]])
    pixels = torch.cat([torch.full((4, 3), 0.0), torch.full((6, 3), 1.0)])
    return PolicyBatch(
        base.input_ids, base.attention_mask, base.response_mask, pixels, grids,
        image_index=torch.tensor([0, 0, 0, 1, 1, 1]), advantages=base.advantages,
    )  # fmt: skip


def test_a_group_shares_its_prompts_image_and_selection_keeps_each_image_once() -> None:
    batch = _shared_image_batch()
    assert batch.pixel_values.shape[0] == 10  # two images, not six copies
    picked = batch.select([2, 3, 4])
    assert picked.image_grid_thw.tolist() == [[1, 2, 2], [1, 2, 3]] and picked.image_index.tolist() == [0, 1, 1]
    assert picked.pixel_values.shape[0] == 10
    only_second = batch.select([4, 5])
    assert only_second.image_grid_thw.tolist() == [[1, 2, 3]] and only_second.pixel_values[:, 0].unique().tolist() == [
        1.0
    ]


def test_micro_batches_expand_shared_images_in_sample_order_for_the_model() -> None:
    micro = make_micro_batches(_shared_image_batch(), micro_batch_size=3)
    first, second = (mb.batch for mb in micro)
    assert first.image_grid_thw.tolist() == [[1, 2, 2]] * 3 and first.pixel_values.shape[0] == 12
    assert first.image_index.tolist() == [0, 1, 2] and second.pixel_values[:, 0].unique().tolist() == [1.0]
