"""Mapped Complete IoU between boxes, as SpatialThinker's reward computes it.

For boxes A (ground truth) and B (prediction), [x1, y1, x2, y2], eps = 1e-7, boxes not clamped:
    iou   = inter / (area_A + area_B - inter + eps)              inter from the clipped overlap
    rho2  = squared distance of the centres;  c2 = squared diagonal of the enclosing box + eps
    v     = 4/pi^2 * (atan(wB / (hB + eps)) - atan(wA / (hA + eps)))^2
    alpha = v / ((1 - iou) + v), or 0 when that denominator is 0
    mciou = (iou - rho2 / c2 - alpha * v + 1) / 2
An identical box gives 0.9999997, far disjoint boxes still score above 0.

Departures from upstream (behaviour only, never a finite number): large matrices (more than SCALAR_PAIRS
pairs, e.g. thousands of predicted boxes) are computed with numpy, small ones with a Python loop because
numpy's per-call overhead costs ~10x more on a 2 x 5 matrix. The Python path performs upstream's
operations in upstream's order, so its values are upstream's bit for bit; numpy's vector kernels may round
the last bit differently (a test bounds the two paths' difference at 1e-12 relative). A pair whose value is
not finite (NaN or infinite coordinates, which Python's json accepts, or a zero `hB + eps`) gets 0.0, the
worst box score, where upstream would crash inside the assignment solver or divide by zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

EPS = 1e-7
ASPECT_FACTOR = 4 / (math.pi**2)
SCALAR_PAIRS = 256

Box = tuple[float, float, float, float]


def mciou_matrix(gt_boxes: Sequence[Box], pred_boxes: Sequence[Box]) -> np.ndarray:
    """mciou(gt_j, pred_i) for every pair, shape (len(pred_boxes), len(gt_boxes)); non-finite -> 0."""
    if not gt_boxes or not pred_boxes:
        return np.zeros((len(pred_boxes), len(gt_boxes)))
    if len(gt_boxes) * len(pred_boxes) <= SCALAR_PAIRS:
        return _mciou_scalar(gt_boxes, pred_boxes)
    return _mciou_numpy(gt_boxes, pred_boxes)


def mciou_rows(gt_boxes: Sequence[Box], pred_boxes: Sequence[Box]) -> list[list[float]]:
    """`mciou_matrix` as nested lists of Python floats (the reward's hot path reads it element by element)."""
    if gt_boxes and pred_boxes and len(gt_boxes) * len(pred_boxes) <= SCALAR_PAIRS:
        return _mciou_scalar_rows(gt_boxes, pred_boxes)
    return mciou_matrix(gt_boxes, pred_boxes).tolist()  # type: ignore[no-any-return]


def _mciou_numpy(gt_boxes: Sequence[Box], pred_boxes: Sequence[Box]) -> np.ndarray:
    with np.errstate(all="ignore"):
        a = np.asarray(gt_boxes, dtype=np.float64)[None, :, :]  # (1, G, 4)
        b = np.asarray(pred_boxes, dtype=np.float64)[:, None, :]  # (P, 1, 4)
        result = _mciou(a, b, _aspect_angles(gt_boxes)[None, :], _aspect_angles(pred_boxes)[:, None])
    result[~np.isfinite(result)] = 0.0
    return result


def _aspect_angles(boxes: Sequence[Box]) -> np.ndarray:
    """atan(w / (h + eps)) per box, with `math.atan` as upstream; NaN where it is undefined."""
    angles = np.empty(len(boxes))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        try:
            angles[i] = math.atan((x2 - x1) / ((y2 - y1) + EPS))
        except (ZeroDivisionError, ValueError, OverflowError):
            angles[i] = math.nan
    return angles


def _mciou(a: np.ndarray, b: np.ndarray, angle_a: np.ndarray, angle_b: np.ndarray) -> np.ndarray:
    ax1, ay1, ax2, ay2 = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bx1, by1, bx2, by2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    inter_w = np.maximum(0.0, np.minimum(ax2, bx2) - np.maximum(ax1, bx1))
    inter_h = np.maximum(0.0, np.minimum(ay2, by2) - np.maximum(ay1, by1))
    inter = inter_w * inter_h
    iou = inter / (area_a + area_b - inter + EPS)
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    enclose_w = np.maximum(ax2, bx2) - np.minimum(ax1, bx1)
    enclose_h = np.maximum(ay2, by2) - np.minimum(ay1, by1)
    c2 = enclose_w**2 + enclose_h**2 + EPS
    v = ASPECT_FACTOR * (angle_b - angle_a) ** 2
    denominator = (1 - iou) + v
    alpha = np.where(denominator != 0, v / np.where(denominator != 0, denominator, 1.0), 0.0)
    ciou = iou - (rho2 / c2 + alpha * v)
    return (ciou + 1) / 2


def _mciou_scalar(gt_boxes: Sequence[Box], pred_boxes: Sequence[Box]) -> np.ndarray:
    return np.array(_mciou_scalar_rows(gt_boxes, pred_boxes), dtype=np.float64)


def _mciou_scalar_rows(gt_boxes: Sequence[Box], pred_boxes: Sequence[Box]) -> list[list[float]]:
    gt_angles, pred_angles = _aspect_angles(gt_boxes).tolist(), _aspect_angles(pred_boxes).tolist()
    return [
        [_mciou_pair(a, b, angle_a, angle_b) for a, angle_a in zip(gt_boxes, gt_angles, strict=True)]
        for b, angle_b in zip(pred_boxes, pred_angles, strict=True)
    ]


def _mciou_pair(a: Box, b: Box, angle_a: float, angle_b: float) -> float:
    """One pair, upstream's operations; 0.0 where the value is not finite.

    `y if y > x else x` is exactly Python's `max(x, y)` (and `y if y < x else x` its `min`), NaN included,
    without the call: this loop is the reward's hot path.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    left, right = (bx1 if bx1 > ax1 else ax1), (bx2 if bx2 < ax2 else ax2)
    top, bottom = (by1 if by1 > ay1 else ay1), (by2 if by2 < ay2 else ay2)
    inter_w, inter_h = right - left, bottom - top
    inter = (inter_w if inter_w > 0.0 else 0.0) * (inter_h if inter_h > 0.0 else 0.0)
    enclose_w = (bx2 if bx2 > ax2 else ax2) - (bx1 if bx1 < ax1 else ax1)
    enclose_h = (by2 if by2 > ay2 else ay2) - (by1 if by1 < ay1 else ay1)
    try:
        iou = inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter + EPS)
        rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
        c2 = enclose_w**2 + enclose_h**2 + EPS
        v = ASPECT_FACTOR * (angle_b - angle_a) ** 2
        denominator = (1 - iou) + v
        alpha = v / denominator if denominator != 0 else 0.0
        value = (iou - (rho2 / c2 + alpha * v) + 1) / 2
    except (ZeroDivisionError, OverflowError):
        return 0.0
    return value if math.isfinite(value) else 0.0
