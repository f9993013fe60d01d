"""Frames between numpy (uint8, (N, H, W, 3), as read and written) and torch ((N, 3, H, W) float
in [0, 1], as the models take them).

On a GPU neither direction waits for the GPU: frames go up through pinned host memory with an
asynchronous copy, and come down as :class:`HostFrames`, whose copy into pinned memory is
queued behind the work that made them and waited for only by whoever reads them (the video
writers' threads), so the main thread goes on queueing the next window's work."""
from __future__ import annotations

import numpy as np
import torch  # on first use: reading and writing videos does not need torch


def frames_to_tensor(frames: np.ndarray, device="cpu"):
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    if torch.device(device).type == "cuda":
        # pinned source: the copy is queued on the stream instead of waiting for it to drain
        x = x.pin_memory().to(device, non_blocking=True)
    else:
        x = x.to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class HostFrames:
    """(N, H, W, 3) uint8 frames being copied from the GPU into pinned host memory. ``shape``
    and ``dtype`` are known at once; :meth:`numpy` (and ``np.asarray``) waits for the copy.
    Pickled as the plain array (frames sent to another process)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, frames: torch.Tensor):
        self.shape = tuple(frames.shape)
        self._copied = None
        if frames.is_cuda:
            self._host = torch.empty(self.shape, dtype=torch.uint8, pin_memory=True)
            self._host.copy_(frames, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(frames.device))
        else:  # already on the host (tests)
            self._host = frames.to(torch.uint8).contiguous()

    def numpy(self) -> np.ndarray:
        if self._copied is not None:
            self._copied.synchronize()
        return self._host.numpy()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __reduce__(self):
        return np.array, (self.numpy(),)


def tensor_to_frames(frames, wait: bool = True):
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 on the CPU (rounded, clamped).
    ``wait=False`` on a GPU: :class:`HostFrames` (the conversion runs on the GPU, the copy is
    queued), else a numpy array."""
    out = frames.float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    out = out.permute(0, 2, 3, 1).contiguous()
    if not wait and out.is_cuda:
        return HostFrames(out)
    return out.cpu().numpy()
