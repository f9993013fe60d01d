"""A whole clip through the pipeline in pixel windows (docs/method.md §6): temporal windows x
spatial tiles, each restored by :meth:`PSSRPipeline.run_tile`, blended in memory, finished
frames handed out as soon as no later window touches them. Sources and sinks are the caller's
(files in ``Wan_SR.runs.step1``, arrays in :func:`Wan_SR.runs.step1.restore`)."""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch

from Wan_SR.core.options import WindowOptions
from Wan_SR.core.profile import WINDOW, mark, span
from Wan_SR.core.windows import (SpatialAccumulator, TemporalBlender, first_window_touching,
                                 tile_boxes, window_starts)


def pixel_window_plan(num_frames: int, height: int, width: int, windows: WindowOptions):
    """``(t_win, starts, boxes)``: the temporal window length, its starts, and the spatial tiles."""
    t_win = min(windows.window_t, num_frames)
    starts = window_starts(num_frames, t_win, windows.overlap_t)
    boxes = tile_boxes(height, width, windows.window_h, windows.window_w, windows.overlap_h,
                       windows.overlap_w)
    return t_win, starts, boxes


def iter_pixel_windows(pipe, get_frames: Callable[[int, int], torch.Tensor], num_frames: int,
                       height: int, width: int, branches: Sequence[str], windows: WindowOptions,
                       on_tile: Optional[Callable[[int, int, int, int], None]] = None,
                       part: Optional[tuple[int, int]] = None) -> Iterator[dict]:
    """Yield {branch: (n,3,H,W) in [0,1]} of finished frames, in order, for the requested
    branches. ``get_frames(start, count)`` returns (count,3,H,W) in [0,1] on the pipeline's
    device; ``on_tile(window, n_windows, tile, n_tiles)`` reports progress.

    ``part = (k0, k1)``: only the frames windows ``k0..k1-1`` finish, ``[starts[k0],
    starts[k1])`` (to the end for the last window), exactly as the whole run yields them. The
    earlier windows that reach into ``starts[k0]`` are restored too (the seam is computed on
    both sides): a frame depends only on the windows covering it, so a part blends its frames
    as the whole run does (docs/method.md, "Several processes")."""
    w = windows
    t_win, starts, boxes = pixel_window_plan(num_frames, height, width, w)
    k0, k1 = part or (0, len(starts))
    first = first_window_touching(starts, t_win, starts[k0])
    length = starts[k1] if k1 < len(starts) else num_frames
    blenders = {b: TemporalBlender(starts[first:k1], length) for b in branches}
    for k in range(first, k1):
        s = starts[k]
        mark(WINDOW, str(k))
        with span("read"):
            frames = get_frames(s, t_win)
        if len(boxes) == 1:
            window = pipe.run_tile(frames, branches)
            if on_tile:
                on_tile(k, len(starts), 0, 1)
        else:
            accs = {b: SpatialAccumulator((t_win, 3, height, width), w.overlap_h, w.overlap_w,
                                          device=pipe.device) for b in branches}
            for i, (top, left, th, tw) in enumerate(boxes):
                tile = pipe.run_tile(frames[..., top:top + th, left:left + tw], branches)
                for b in branches:
                    accs[b].add(tile[b], top, left)
                if on_tile:
                    on_tile(k, len(starts), i, len(boxes))
            window = {b: accs[b].result() for b in branches}
        with span("blend"):
            done = {b: blenders[b].add(window[b]) for b in branches}
        if k >= k0:  # the windows before k0 only prepare the blend at the seam
            yield done
