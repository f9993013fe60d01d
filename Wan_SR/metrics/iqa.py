"""Per-frame image-quality metrics through pyiqa.

Every metric is created with ``pyiqa.create_metric(name, device=..., as_loss=False)`` inside
:func:`Wan_SR.metrics.weights.weight_guard` (weight files found in their folders or under
``--weights_dir``, a clear error when one is missing and cannot be downloaded). Frames are
``(B, 3, H, W)`` float tensors in [0, 1]; each call returns one score per frame.

PSNR / SSIM (names ``psnr``, ``ssim``, ``psnry``, ``ssimc``) are handled as follows, so the
numbers are the standard per-frame values used in SR papers:

- pyiqa's own ``test_y_channel`` is switched off (pyiqa's default Y is YIQ's, and pyiqa's
  ``ssim`` preset even defaults to Y). With ``--test_y_channel`` (always for ``psnry``, never
  for ``ssimc``) the frame is first converted here to docs/method.md §10's luma
  ``Y = 0.257 R + 0.504 G + 0.098 B + 0.0625`` on [0, 1] RGB and the one-channel image is
  scored; otherwise all three RGB channels are scored.
- Border crop (``--crop``) is done by the caller for every full-reference metric, so
  pyiqa's ``crop_border`` stays 0.
- PSNR = ``10 log10(1 / MSE)`` over all pixels (and channels) of one frame, in float64, with
  pyiqa's ``eps`` set to 0 (pyiqa adds 1e-8 to the MSE by default, which caps identical frames
  at 80 dB and biases every value). A frame's PSNR is clipped to at most
  :data:`PSNR_CAP_DB` = 100 dB, so identical frames score 100 and the JSON stays finite.
- SSIM is pyiqa's MATLAB-compatible SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
  'valid' filtering, no downsampling, data range 255 with inputs rounded to 8-bit levels
  (``round(255 x)``; exact for RGB, quantises the float Y), the contrast-structure term clamped
  at 0 (pyiqa's ``relu``), mean over the map and channels. pyiqa filters with a full 11x11
  float64 convolution in torch, which takes ~30 s per 1080p frame on a 2-core CPU; on the CPU
  (default, ``fast_ssim=None``) :func:`ssim_separable` computes the same quantity with OpenCV's
  separable float64 Gaussian filter (~0.5 s per 1080p frame): same window, constants, rounding
  and clamp, the window in float64 where pyiqa stores it in float32, so values agree to ~2e-7
  (checked in tests/test_metrics.py). On CUDA pyiqa's own module is used.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import pyiqa
import torch
from pyiqa.default_model_configs import DEFAULT_CONFIGS

from .weights import weight_guard

PSNR_CAP_DB = 100.0
Y_COEFFS = (0.257, 0.504, 0.098)
Y_OFFSET = 0.0625

# metrics that score a whole set of images, not one frame (not supported per frame)
SET_LEVEL = {"fid", "fid_dinov2", "sfid", "inception_score"}
# metrics that need extra inputs (captions / pairs) this tool does not provide
UNSUPPORTED = {"clipscore": "needs a caption per image", "compare2score": "pairwise model"}
# name -> (pyiqa preset, use Y: True / False / None = follow --test_y_channel)
CLASSIC = {"psnr": ("psnr", None), "psnry": ("psnr", True), "ssim": ("ssim", None),
           "ssimc": ("ssimc", False)}


class MetricError(ValueError):
    """Bad metric request (unknown name, unsupported kind, FR metric without --gt)."""


def rgb_to_y(x):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) Y = .257R + .504G + .098B + .0625."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b + Y_OFFSET


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = (size - 1) / 2.0
    x = np.arange(size, dtype=np.float64) - r
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def ssim_separable(x, y, data_range: float = 255.0) -> np.ndarray:
    """pyiqa's SSIM (``pyiqa.archs.ssim_arch.SSIM`` with test_y_channel=False, downsample=False)
    computed on the CPU with OpenCV's separable float64 filter (``cv2.sepFilter2D``; the 'valid'
    part of the filtered map, so the border mode plays no role). ``x``, ``y``: (B, C, H, W)
    tensors or arrays in [0, 1] -> (B,) float64."""
    def to_np(t):
        if hasattr(t, "detach"):
            t = t.detach().cpu().double().numpy()
        return np.asarray(t, dtype=np.float64)

    xs, ys = to_np(x), to_np(y)
    g = _gauss_1d()
    r = (g.size - 1) // 2
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    out = np.empty(xs.shape[0], dtype=np.float64)
    for i in range(xs.shape[0]):
        a = np.round(np.ascontiguousarray(xs[i].transpose(1, 2, 0)) * data_range)
        b = np.round(np.ascontiguousarray(ys[i].transpose(1, 2, 0)) * data_range)

        def filt(t):
            f = cv2.sepFilter2D(t, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
            return f[r:-r, r:-r]

        mu1, mu2 = filt(a), filt(b)
        mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
        s1 = filt(a * a) - mu1_sq
        s2 = filt(b * b) - mu2_sq
        s12 = filt(a * b) - mu1_mu2
        cs = np.maximum((2 * s12 + c2) / (s1 + s2 + c2), 0.0)
        out[i] = (((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs).mean()
    return out


def available_metrics() -> list[str]:
    return list(pyiqa.list_models())


def metric_mode(name: str) -> str:
    """'FR' or 'NR' for a pyiqa metric name (no model is built)."""
    if name not in DEFAULT_CONFIGS:
        raise MetricError(f"unknown metric '{name}'")
    return DEFAULT_CONFIGS[name].get("metric_mode", "NR")


class IQAMetric:
    """One pyiqa metric, scoring frames one score per frame."""

    def __init__(self, name: str, device: str = "cpu", test_y_channel: bool = False,
                 weights_dir: Optional[str] = None, fast_ssim: Optional[bool] = None):
        self.name = name
        if name in SET_LEVEL:
            raise MetricError(f"metric '{name}' is a set-level (distribution) metric, "
                              f"not a per-frame one; it is not supported here")
        if name in UNSUPPORTED:
            raise MetricError(f"metric '{name}' is not supported here ({UNSUPPORTED[name]})")
        if name not in DEFAULT_CONFIGS:
            raise MetricError(f"unknown metric '{name}'. pyiqa metrics: "
                              f"{', '.join(sorted(DEFAULT_CONFIGS))}; plus 'ewarp'")
        cfg = DEFAULT_CONFIGS[name]
        self.mode = cfg.get("metric_mode", "NR")
        self.lower_better = bool(cfg.get("lower_better", False))
        self.device = device
        self.classic = name in CLASSIC
        kwargs = {}
        if self.classic:
            preset, use_y = CLASSIC[name]
            self.use_y = test_y_channel if use_y is None else use_y
            kwargs = {"test_y_channel": False, "crop_border": 0}
            if preset == "psnr":
                kwargs["eps"] = 0.0
            self.preset = preset
            if fast_ssim is None:
                fast_ssim = not str(device).startswith("cuda")
            self.fast_ssim = bool(fast_ssim) and preset in ("ssim", "ssimc")
        else:
            self.fast_ssim = False
            self.use_y = False
            self.preset = name

        if self.classic:  # PSNR / SSIM need no weight file: no guard, no network probe
            self.model = pyiqa.create_metric(self.preset, device=device, as_loss=False, **kwargs)
        else:
            with weight_guard(name, weights_dir, require=True):
                self.model = pyiqa.create_metric(self.preset, device=device, as_loss=False,
                                                 **kwargs)

    def __call__(self, pred, gt=None) -> np.ndarray:
        """``pred``/``gt``: (B, 3, H, W) float tensors in [0, 1] on any device -> (B,) float64."""
        b = pred.shape[0]
        if self.mode == "FR" and gt is None:
            raise MetricError(f"metric '{self.name}' is full-reference and needs --gt")
        with torch.no_grad():
            if self.classic:
                p = pred.to(self.device, torch.float64)
                g = gt.to(self.device, torch.float64)
                if self.use_y:
                    p, g = rgb_to_y(p), rgb_to_y(g)
                out = ssim_separable(p, g) if self.fast_ssim else self.model(p, g)
            else:
                p = pred.to(self.device, torch.float32)
                if self.mode == "FR":
                    out = self.model(p, gt.to(self.device, torch.float32))
                else:
                    out = self.model(p)
        if isinstance(out, (tuple, list)):
            out = out[0]
        scores = torch.as_tensor(out).detach().double().cpu().reshape(-1).numpy()
        if scores.size != b:
            raise RuntimeError(f"metric '{self.name}' returned {scores.size} values for {b} "
                               f"frames; score without --batch_mode")
        if self.preset == "psnr":
            scores = np.minimum(scores, PSNR_CAP_DB)  # identical frames: +inf -> cap
        return scores
