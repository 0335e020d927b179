"""The SFT loss: token-mean cross-entropy on the target tokens, the same however the global batch is cut."""

import math

import pytest
import torch

from nemo_spatial.algorithms import LossScale
from nemo_spatial.algorithms.sft_loss import sft_loss


def test_value_is_the_mean_nll_of_the_target_tokens_only():
    log_probs = torch.log(torch.tensor([[0.9, 0.5, 0.25, 0.1], [0.3, 0.8, 1e-3, 0.5]]))
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]]).bool()  # prompt and padding positions are not trained
    log_probs[1, 2] = float("-inf")  # a prompt position the model finds impossible: never reaches the loss
    loss, metrics = sft_loss(log_probs, mask)
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.25) + math.log(0.8)) / 3)
    assert metrics["num_tokens"] == 3.0
    assert metrics["token_accuracy"] == pytest.approx(1 / 3)  # only 0.8 is above 0.5


def test_micro_batches_sum_to_the_global_token_mean_and_gradients_match():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 5, (4, 6), generator=gen)
    lengths = torch.tensor([1, 6, 2, 5])
    mask = (torch.arange(6)[None, :] >= 1) & (torch.arange(6)[None, :] < lengths[:, None] + 1)

    def run(chunks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        weights = logits.clone().requires_grad_(True)
        log_probs = torch.log_softmax(weights, -1).gather(-1, targets[..., None])[..., 0]
        scale = LossScale.for_global_batch([mask[c] for c in chunks])
        total = sum(sft_loss(log_probs[c], mask[c], scale)[0] for c in chunks)
        total.backward()
        return total.detach(), weights.grad

    whole, whole_grad = run([[0, 1, 2, 3]])
    for chunks in ([[0], [1], [2], [3]], [[3, 0], [2, 1]]):
        loss, grad = run(chunks)
        torch.testing.assert_close(loss, whole)
        torch.testing.assert_close(grad, whole_grad)
    # Without the global count, averaging per-micro-batch means weighs the 1-token row 4x more: not the same.
    log_probs = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    naive = sum(sft_loss(log_probs[[i]], mask[[i]])[0] for i in range(4)) / 4
    assert abs(naive.item() - whole.item()) > 1e-3
