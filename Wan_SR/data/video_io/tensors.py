"""Frames between numpy (uint8, (N, H, W, 3), as read and written) and torch ((N, 3, H, W) float
in [0, 1], as the models take them)."""
from __future__ import annotations

import numpy as np
import torch  # on first use: reading and writing videos does not need torch


def frames_to_tensor(frames: np.ndarray, device="cpu"):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def tensor_to_frames(frames) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 on the CPU (rounded, clamped)."""
    out = frames.float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()
