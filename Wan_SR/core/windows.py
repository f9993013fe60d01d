"""Sliding windows shared by step 1 and step 2 (docs/method.md §6).

- :func:`window_starts` gives the start indices along one axis (time, height or width).
- :func:`tile_weight` is the separable ramp weight of one spatial tile.
- :class:`SpatialAccumulator` blends processed tiles of one frame stack: sum(w*tile)/sum(w).
- :class:`TemporalBlender` cross-fades consecutive windows and hands out frames as soon as no
  later window can touch them (streaming output).
- :func:`run_tiled` applies a function tile by tile on (T, C, H, W) tensors.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch


@dataclass
class WindowOptions:
    """Window sizes and overlaps in pixels / frames (docs/method.md §6 defaults, step-1 overlap)."""
    window_t: int = 33
    overlap_t: int = 16
    window_h: int = 720
    overlap_h: int = 128
    window_w: int = 1280
    overlap_w: int = 128


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts 0, window-overlap, ...; the last start is forced to ``length - window``.

    A length not larger than the window gives one window at 0.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if length <= window:
        return [0]
    stride = window - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the window ({window})")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def ramp_1d(size: int, overlap: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 in the middle, ``linspace(1e-6, 1, ov)`` rising at the start and falling at the end,
    with ``ov = min(overlap, size // 2)``."""
    w = torch.ones(size, device=device, dtype=dtype)
    ov = min(overlap, size // 2)
    if ov > 0:
        ramp = torch.linspace(1e-6, 1, ov, device=device, dtype=dtype)
        w[:ov] = ramp
        w[size - ov:] = ramp.flip(0)
    return w


def tile_weight(height: int, width: int, overlap_h: int, overlap_w: int, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """Outer product of the two axis ramps, shape (H, W)."""
    return torch.outer(ramp_1d(height, overlap_h, device, dtype), ramp_1d(width, overlap_w, device, dtype))


def tile_boxes(height: int, width: int, window_h: int, window_w: int, overlap_h: int,
               overlap_w: int) -> list[tuple[int, int, int, int]]:
    """(top, left, tile_h, tile_w) of every spatial tile; a frame smaller than the window is one tile."""
    th, tw = min(window_h, height), min(window_w, width)
    return [(y, x, th, tw)
            for y in window_starts(height, th, overlap_h)
            for x in window_starts(width, tw, overlap_w)]


class SpatialAccumulator:
    """Weighted accumulation of tiles into a (..., H, W) canvas."""

    def __init__(self, shape: tuple[int, ...], overlap_h: int, overlap_w: int, device=None,
                 dtype=torch.float32):
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.weights = torch.zeros(shape[-2:], device=device, dtype=dtype)
        self.overlap_h, self.overlap_w = overlap_h, overlap_w

    def add(self, tile: torch.Tensor, top: int, left: int) -> None:
        h, w = tile.shape[-2:]
        wt = tile_weight(h, w, self.overlap_h, self.overlap_w, tile.device, self.values.dtype)
        self.values[..., top:top + h, left:left + w] += tile.to(self.values.dtype) * wt
        self.weights[top:top + h, left:left + w] += wt

    def result(self) -> torch.Tensor:
        return self.values / self.weights


def run_tiled(fn: Callable[..., torch.Tensor], *videos: torch.Tensor, window_h: int, window_w: int,
              overlap_h: int, overlap_w: int) -> torch.Tensor:
    """Apply ``fn(*tiles) -> tile`` on every spatial tile of same-size (..., H, W) tensors and
    blend the results. With one tile this is exactly ``fn(*videos)``."""
    H, W = videos[0].shape[-2:]
    boxes = tile_boxes(H, W, window_h, window_w, overlap_h, overlap_w)
    if len(boxes) == 1:
        return fn(*videos)
    acc = None
    for top, left, th, tw in boxes:
        out = fn(*[v[..., top:top + th, left:left + tw] for v in videos])
        if acc is None:
            acc = SpatialAccumulator((*out.shape[:-2], H, W), overlap_h, overlap_w, out.device,
                                     torch.float32)
        acc.add(out, top, left)
    return acc.result().to(videos[0].dtype)


class TemporalBlender:
    """Cross-fades windows along the first axis and streams finished frames.

    ``starts`` are all window starts (from :func:`window_starts`), ``length`` the clip length.
    Add each window's frames in order with :meth:`add`; it returns the frames that are final
    (no later window overlaps them). In an overlap of ``o`` frames between what has been built
    so far and the new window, the output is ``prev * (1 - a) + cur * a``, ``a = linspace(0, 1, o)``.
    """

    def __init__(self, starts: list[int], length: int):
        self.starts = list(starts)
        self.length = length
        self._k = 0
        self._pending: Optional[torch.Tensor] = None  # frames [self._p0, self._p0 + len)
        self._p0 = 0

    def add(self, frames: torch.Tensor) -> torch.Tensor:
        if self._k >= len(self.starts):
            raise RuntimeError("TemporalBlender: more windows than starts")
        s = self.starts[self._k]
        if self._pending is None:
            merged, self._p0 = frames, s
        else:
            end = self._p0 + self._pending.shape[0]
            o = end - s
            if o < 0:
                raise ValueError("TemporalBlender: windows leave a gap")
            o = min(o, frames.shape[0])
            keep = self._pending[: s - self._p0]
            if o > 0:
                a = torch.linspace(0, 1, o, device=frames.device, dtype=torch.float32)
                a = a.view(-1, *([1] * (frames.dim() - 1)))
                prev = self._pending[s - self._p0: s - self._p0 + o].float()
                blended = (prev * (1 - a) + frames[:o].float() * a).to(frames.dtype)
                merged = torch.cat([keep, blended, frames[o:]], 0)
            else:
                merged = torch.cat([keep, frames], 0)
        self._k += 1
        final_upto = self.starts[self._k] if self._k < len(self.starts) else self.length
        n_final = max(0, final_upto - self._p0)
        out, self._pending = merged[:n_final], merged[n_final:]
        self._p0 += n_final
        return out

    def flush(self) -> torch.Tensor:
        """What is left after the last window (normally nothing)."""
        out = self._pending if self._pending is not None else torch.empty(0)
        self._pending = None
        return out


def iter_windows(length: int, window: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, count) of each temporal window; count is ``min(window, length)``."""
    count = min(window, length)
    for s in window_starts(length, count, overlap):
        yield s, count


def new_frame_ranges(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """``[a, b)`` of the frames each temporal window adds to those of the windows before it
    (windows that add none are left out): consecutive, covering ``[0, length)`` once."""
    ranges, done = [], 0
    for start, count in iter_windows(length, window, overlap):
        if start + count > done:
            ranges.append((done, start + count))
            done = start + count
    return ranges


def first_window_touching(starts: list[int], window: int, frame: int) -> int:
    """Index of the first window (of length ``window`` at ``starts``) that reaches ``frame``."""
    return next(k for k, s in enumerate(starts) if s + window > frame)


def split_parts(n: int, min_parts: int, max_per_part: int) -> list[tuple[int, int]]:
    """Cut ``n`` items (windows) into contiguous parts ``[a, b)``: at least ``min_parts`` (one per
    process), at most ``max_per_part`` items each, a whole multiple of ``min_parts`` so every
    round of parts keeps every process busy, never more parts than items. Sizes differ by one at
    most, the larger ones first (the later parts also restore the windows before their seam)."""
    if n <= 0:
        return []
    k = max(min_parts, -(-n // max(1, max_per_part)))
    k = min(n, -(-k // min_parts) * min_parts)
    q, extra = divmod(n, k)
    bounds = list(itertools.accumulate([q + 1] * extra + [q] * (k - extra), initial=0))
    return list(zip(bounds[:-1], bounds[1:]))
