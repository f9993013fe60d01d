"""Temporal consistency: the flow-warping error ``ewarp`` (lower is better).

Definition (E_warp of Lai et al., ECCV 2018, "Learning Blind Video Temporal Consistency",
with DIS flow instead of FlowNet2). Let ``P_t`` be the predicted frames as RGB in [0, 1]
(float64) and ``S_t`` the flow-source frames: the ground truth when it is given, otherwise the
prediction itself. For every pair of consecutive frames (t, t+1), t = 0 .. T-2:

1. ``F = DIS(gray(S_t), gray(S_t+1))`` and ``B = DIS(gray(S_t+1), gray(S_t))``: OpenCV
   ``cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)`` on uint8 grayscale
   (``cv2.COLOR_RGB2GRAY``), so that ``S_t(x) ~ S_t+1(x + F(x))``.
2. Warp: ``W(x) = P_t+1(x + F(x))`` and ``B_w(x) = B(x + F(x))``, bilinear on float32
   (``cv2.remap``, ``INTER_LINEAR``, ``BORDER_REPLICATE``; OpenCV quantises the sub-pixel
   position to 1/32 px).
3. Occlusion (forward-backward consistency, Sundaram et al. 2010 / Ruder et al. 2016, the rule
   Lai et al. use): pixel x is occluded when
   ``|F(x) + B_w(x)|^2 > 0.01 (|F(x)|^2 + |B_w(x)|^2) + 0.5``
   or when ``x + F(x)`` lies outside ``[0, W-1] x [0, H-1]``. ``M`` = non-occluded pixels.
   (Lai et al.'s additional motion-boundary term is not used.)
4. ``E_t = sum_{x in M} sum_c (P_t(x, c) - W(x, c))^2 / (3 |M|)``: mean squared error over
   the non-occluded pixels and the three channels. A pair with an empty ``M`` is skipped.

``ewarp = 1000 * mean_t E_t`` (reported x 1e3). A clip with fewer than two frames (or no usable
pair) has no ewarp (JSON null). No border crop is applied to ewarp.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

EWARP_SCALE = 1e3
FB_ALPHA = 0.01
FB_BETA = 0.5


def _dis():
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def pair_error(src0: np.ndarray, src1: np.ndarray, pred0: np.ndarray, pred1: np.ndarray,
               dis=None, return_mask: bool = False):
    """E_t for one pair. ``src*``: uint8 grayscale (H, W) flow-source frames; ``pred*``: uint8
    RGB (H, W, 3) predicted frames. Returns the masked MSE on [0, 1] (not scaled), or None when
    every pixel is occluded; with ``return_mask`` also the boolean non-occlusion mask."""
    dis = dis or _dis()
    fw = dis.calc(src0, src1, None)
    bw = dis.calc(src1, src0, None)
    h, w = src0.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + fw[..., 0]
    my = gy + fw[..., 1]
    bw_w = cv2.remap(bw, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fw64, bw64 = fw.astype(np.float64), bw_w.astype(np.float64)
    lhs = ((fw64 + bw64) ** 2).sum(-1)
    rhs = FB_ALPHA * ((fw64 ** 2).sum(-1) + (bw64 ** 2).sum(-1)) + FB_BETA
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    mask = (lhs <= rhs) & inside
    n = int(mask.sum())
    if n == 0:
        return (None, mask) if return_mask else None
    # warp in float32 (cv2.remap on uint8 would round the interpolated values)
    warped = cv2.remap(pred1.astype(np.float32), mx, my, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    diff = pred0.astype(np.float64) / 255.0 - warped.astype(np.float64) / 255.0
    err = float((diff[mask] ** 2).sum() / (3 * n))
    return (err, mask) if return_mask else err


class EwarpAccumulator:
    """Streams frames chunk by chunk; keeps only the previous frame between chunks."""

    def __init__(self):
        self._dis = _dis()
        self._prev_src: Optional[np.ndarray] = None
        self._prev_pred: Optional[np.ndarray] = None
        self.total = 0.0
        self.pairs = 0
        self.skipped = 0
        self.errors: list = []  # E_t of every pair (None: fully occluded), for curves

    def update(self, pred: np.ndarray, src: Optional[np.ndarray] = None) -> None:
        """``pred``: (n, H, W, 3) uint8 predicted frames; ``src``: the matching flow-source
        frames (ground truth), or None to take the flow from the prediction."""
        src = pred if src is None else src
        if src.shape[0] != pred.shape[0] or src.shape[1:3] != pred.shape[1:3]:
            raise ValueError(f"ewarp: flow source {src.shape} and prediction {pred.shape} differ")
        for i in range(pred.shape[0]):
            g = _gray(src[i])
            p = pred[i]
            if self._prev_src is not None:
                e = pair_error(self._prev_src, g, self._prev_pred, p, dis=self._dis)
                self.errors.append(e)
                if e is None:
                    self.skipped += 1
                else:
                    self.total += e
                    self.pairs += 1
            self._prev_src, self._prev_pred = g, p

    def value(self) -> Optional[float]:
        """ewarp x 1e3, or None when no pair could be scored."""
        if self.pairs == 0:
            return None
        return EWARP_SCALE * self.total / self.pairs


def ewarp(pred_frames: np.ndarray, src_frames: Optional[np.ndarray] = None) -> Optional[float]:
    """ewarp of a whole (T, H, W, 3) uint8 clip (convenience for short clips and tests)."""
    acc = EwarpAccumulator()
    acc.update(np.asarray(pred_frames), None if src_frames is None else np.asarray(src_frames))
    return acc.value()
