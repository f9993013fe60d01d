"""``ewarp_raft``: the flow-warping error E*warp with RAFT flow (lower is better), the protocol of
the diffusion VSR papers' tables (Lai et al., ECCV 2018, "Learning Blind Video Temporal
Consistency", as used by DOVE / Upscale-A-Video / STAR style evaluations).

Protocol (docs/method.md, "Evaluation"), on the predicted video alone (no ground truth):

1. every pair of consecutive frames (t, t+1), t = 0 .. T-2, as RGB float32 in [0, 1], each
   downscaled by 0.5 (``F.interpolate(scale_factor=0.5, mode="bilinear",
   align_corners=False)``);
2. flow with torchvision's ``raft_large`` (weights ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``, 20
   flow updates): ``F`` = flow(P_t -> P_t+1), ``B`` = flow(P_t+1 -> P_t); the frames are padded
   to multiples of 8 and to at least 128 x 128 (torchvision's RAFT needs it) with replicated
   borders, split evenly (RAFT's "sintel" padding), and given to RAFT scaled to [-1, 1]; the flow
   is cut back to the frame;
3. warp: ``W(x) = P_t+1(x + F(x))``, and ``B_w(x) = B(x + F(x))`` (bilinear, positions
   clamped to the frame: ``grid_sample(align_corners=True, padding_mode="border")``);
4. occlusion (Ruder et al. 2016, the two rules of Lai et al.'s ``detect_occlusion``), pixel x is
   occluded when ``|F + B_w|^2 > 0.01 (|F|^2 + |B_w|^2) + 0.5`` (forward-backward check) or
   ``|dF_x/du|^2 + |dF_x/dv|^2 + |dF_y/du|^2 + |dF_y/dv|^2 > 0.01 |F|^2 + 0.002`` (motion
   boundary; forward differences ``f(x) - f(x+1)``, 0 on the last column / row). M = the rest;
5. ``E_t = sum_{x in M} ||P_t(x) - W(x)||^2 / |M|`` (squared RGB distance per visible pixel, the
   formula of Lai et al.; the DIS ``ewarp`` divides by 3 |M| instead), and 0 when M is empty
   (the masked difference is all zero);

``ewarp_raft = 1000 * mean_t E_t``. A clip with fewer than two frames has no value (null).
The flow can be injected (``flow=``) so the protocol's arithmetic is testable exactly.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.optical_flow import raft_large

from .weights import find_local_file

RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
RAFT_URL = "https://download.pytorch.org/models/" + RAFT_FILE
FLOW_UPDATES = 20
DOWNSCALE = 0.5
SCALE = 1e3
MIN_SIDE = 128  # torchvision's RAFT needs frames of at least 128 x 128
FB_ALPHA, FB_BETA = 0.01, 0.5
MB_ALPHA, MB_BETA = 0.01, 0.002

Flow = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (1,3,H,W) x2 -> (1,2,H,W)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``x(p + flow(p))``: (B, C, H, W) sampled bilinearly at (B, 2, H, W) pixel offsets, the
    positions clamped to the frame (border replication, as ``grid_sample(padding_mode="border",
    align_corners=True)``), computed directly so that whole-pixel offsets are exact."""
    b, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    px = (xs + flow[:, 0].to(x.dtype)).clamp(0, w - 1)
    py = (ys + flow[:, 1].to(x.dtype)).clamp(0, h - 1)
    x0, y0 = px.floor().long(), py.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = (px - x0).unsqueeze(1), (py - y0).unsqueeze(1)
    flat = x.reshape(b, c, h * w)

    def at(yy, xx):
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = (1 - fx) * at(y0, x0) + fx * at(y0, x1)
    bottom = (1 - fx) * at(y1, x0) + fx * at(y1, x1)
    return (1 - fy) * top + fy * bottom


def _sq(v: torch.Tensor) -> torch.Tensor:
    return (v ** 2).sum(1)


def _forward_diffs(f: torch.Tensor) -> torch.Tensor:
    """Sum of squared forward differences of both flow components, (B, H, W)."""
    du = torch.zeros_like(f)
    dv = torch.zeros_like(f)
    du[..., :, :-1] = f[..., :, :-1] - f[..., :, 1:]
    dv[..., :-1, :] = f[..., :-1, :] - f[..., 1:, :]
    return _sq(du) + _sq(dv)


def visible_mask(fw: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the pixels of frame t not occluded (rule 4 of the module doc)."""
    bw_w = warp(bw, fw)
    inconsistent = _sq(fw + bw_w) > FB_ALPHA * (_sq(fw) + _sq(bw_w)) + FB_BETA
    boundary = _forward_diffs(fw) > MB_ALPHA * _sq(fw) + MB_BETA
    return ~(inconsistent | boundary)


def pair_error(img0: torch.Tensor, img1: torch.Tensor, fw: torch.Tensor,
               bw: torch.Tensor) -> float:
    """E_t of (1, 3, H, W) frames in [0, 1] with flows (1, 2, H, W) (not scaled by 1000)."""
    mask = visible_mask(fw, bw)
    n = int(mask.sum())
    if n == 0:
        return 0.0
    diff = (img0 - warp(img1, fw)).double() ** 2
    return float((diff.sum(1) * mask).sum() / n)


def prepare(frame: np.ndarray, device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H/2, W/2) float32 in [0, 1] (step 1)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None]
    return F.interpolate(x.float() / 255.0, scale_factor=DOWNSCALE, mode="bilinear",
                         align_corners=False)


class RaftFlow:
    """torchvision ``raft_large`` from a local weight file, as a :data:`Flow`."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.model = raft_large(weights=None)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        try:
            self.model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise ValueError(f"{path}: not torchvision raft_large weights ({first})") from e
        self.model.eval().to(device)
        self.device = device

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        ph, pw = max((-h) % 8, MIN_SIDE - h), max((-w) % 8, MIN_SIDE - w)
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        a2, b2 = (F.pad(t * 2.0 - 1.0, pad, mode="replicate") for t in (a, b))
        with torch.no_grad():
            flow = self.model(a2, b2, num_flow_updates=FLOW_UPDATES)[-1]
        return flow[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]


def load_raft(weights_dir: Optional[str], device: str = "cpu") -> RaftFlow:
    """RAFT from ``raft_large_C_T_SKHT_V2-ff5fadd5.pth`` found locally (never downloaded)."""
    return RaftFlow(find_local_file((RAFT_FILE,), weights_dir, "ewarp_raft", RAFT_URL), device)


class RaftEwarpAccumulator:
    """Streams predicted frames chunk by chunk; ``errors`` holds E_t of every pair."""

    def __init__(self, flow: Flow, device: str = "cpu"):
        self.flow = flow
        self.device = device
        self.errors: list[float] = []
        self._prev: Optional[torch.Tensor] = None

    def update(self, pred: np.ndarray) -> None:
        """``pred``: (n, H, W, 3) uint8 predicted frames, continuing the previous chunk."""
        for frame in pred:
            cur = prepare(frame, self.device)
            if self._prev is not None:
                fw = self.flow(self._prev, cur)
                bw = self.flow(cur, self._prev)
                self.errors.append(pair_error(self._prev, cur, fw, bw))
            self._prev = cur

    def value(self) -> Optional[float]:
        """ewarp_raft (x 1e3), or None with fewer than two frames."""
        return SCALE * float(np.mean(self.errors)) if self.errors else None


def ewarp_raft(frames: np.ndarray, flow: Flow, device: str = "cpu") -> Optional[float]:
    """ewarp_raft of a whole (T, H, W, 3) uint8 clip (for short clips and tests)."""
    acc = RaftEwarpAccumulator(flow, device)
    acc.update(np.asarray(frames))
    return acc.value()
