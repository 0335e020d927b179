"""mciou against a scalar reference written from the spec's formula, and its edge cases."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nemo_spatial.reward.boxes import mciou_matrix


def reference_mciou(a, b, eps=1e-7):
    """The spec's formula, one pair at a time, in plain Python."""
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    iou = inter / (wa * ha + wb * hb - inter + eps)
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2 + eps
    v = 4 / math.pi**2 * (math.atan(wb / (hb + eps)) - math.atan(wa / (ha + eps))) ** 2
    alpha = v / ((1 - iou) + v) if (1 - iou) + v != 0 else 0.0
    return (iou - (rho2 / c2 + alpha * v) + 1) / 2


coordinate = st.floats(min_value=-2.0, max_value=3.0, allow_nan=False)
box = st.tuples(coordinate, coordinate, coordinate, coordinate)


@given(st.lists(box, min_size=1, max_size=5), st.lists(box, min_size=1, max_size=5))
def test_matrix_equals_scalar_reference(gt_boxes, pred_boxes):
    matrix = mciou_matrix(gt_boxes, pred_boxes)
    assert matrix.shape == (len(pred_boxes), len(gt_boxes))
    for (i, p), (j, g) in itertools.product(enumerate(pred_boxes), enumerate(gt_boxes)):
        try:
            expected = reference_mciou(g, p)
        except ZeroDivisionError:
            expected = 0.0  # a zero h + eps: upstream divides by zero, here the pair scores 0
        if not math.isfinite(expected):
            expected = 0.0
        assert matrix[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_identical_box_is_just_below_one():
    """iou = area / (area + eps): 0.9999997 for a box of area 0.17 (the spec's example), lower for smaller."""
    value = mciou_matrix([(0.0, 0.0, 0.5, 0.34)], [(0.0, 0.0, 0.5, 0.34)])[0, 0]
    assert value == pytest.approx(0.9999997, abs=1e-8) and value < 1.0
    small = mciou_matrix([(0.0, 0.0, 0.01, 0.01)], [(0.0, 0.0, 0.01, 0.01)])[0, 0]
    assert small == pytest.approx((1e-4 / (1e-4 + 1e-7) + 1) / 2, rel=1e-12)


def test_inverted_boxes_can_make_upstream_mciou_very_negative():
    """Why the reward clamps each matched pair at 0 (spatialthinker.py's docstring)."""
    assert mciou_matrix([(0.0, 0.0, 0.1, 0.1)], [(10.0, 0.0, 0.0, 0.001)])[0, 0] < -100


def test_far_disjoint_boxes_still_score_above_zero():
    value = mciou_matrix([(0.0, 0.0, 0.1, 0.1)], [(0.9, 0.9, 1.0, 1.0)])[0, 0]
    assert 0.0 < value < 0.1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_coordinates_score_zero(bad):
    matrix = mciou_matrix([(0.0, 0.0, 0.5, 0.5)], [(bad, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5)])
    assert matrix[0, 0] == 0.0 and matrix[1, 0] > 0.99


def test_empty_sides_give_empty_matrices():
    assert mciou_matrix([], [(0, 0, 1, 1)]).shape == (1, 0)
    assert mciou_matrix([(0, 0, 1, 1)], []).shape == (0, 1)
    assert np.all(np.isfinite(mciou_matrix([(0, 0, 1, 1)], [(0, 0, 1, -1e-7)])))


@given(st.lists(box, min_size=1, max_size=12), st.lists(box, min_size=1, max_size=12))
def test_scalar_and_numpy_paths_agree(gt_boxes, pred_boxes):
    from nemo_spatial.reward.boxes import _mciou_numpy, _mciou_scalar

    np.testing.assert_allclose(_mciou_scalar(gt_boxes, pred_boxes), _mciou_numpy(gt_boxes, pred_boxes), rtol=1e-12)


def test_non_finite_agree_on_both_paths():
    from nemo_spatial.reward.boxes import _mciou_numpy, _mciou_scalar

    gt = [(0.0, 0.0, 0.5, 0.5), (1e200, -1e200, 1e300, 1e300)]
    pred = [(math.nan, 0.0, 1.0, 1.0), (math.inf, 0.0, 1.0, 1.0), (10.0, 0.0, 0.0, 1e-3), (0.0, 0.0, 0.5, 0.5)]
    np.testing.assert_allclose(_mciou_scalar(gt, pred), _mciou_numpy(gt, pred), rtol=1e-12)
