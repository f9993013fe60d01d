"""Step 1 on a clip held in memory (the Python API): the pixel-window source of the folder runs
over an array, into a :class:`~Wan_SR.runs.step1.sink.MemorySink`."""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import numpy as np

from Wan_SR.core.options import FusionOptions, Step1Options, WindowOptions
from Wan_SR.models.tagger import ClipPrompts
from ..parallel import deliver
from .folder import prompt_clip
from .plan import plan_clip
from .sink import MemorySink
from .sources import ArrayReader, PixelWindows


def restore(pipe, frames, outputs: Optional[Sequence[str]] = None,
            windows: Optional[WindowOptions] = None, fusion: Optional[FusionOptions] = None,
            upscale: float = 1.0, prompts: Optional[ClipPrompts] = None) -> dict:
    """Restore a whole clip held in memory (pixel windows, as step 1).

    ``frames``: (T, H, W, 3) uint8 array (what :func:`Wan_SR.data.video_io.read_video` returns).
    ``outputs``: branch names (``base``, ``base+draft_k``, ``final``; default base and every
    draft branch). ``prompts``: per-clip prompts (tags; default: the pipeline's prompt).
    Returns {output: (T, H', W', 3) uint8} with exactly T frames (H', W' = the size times
    ``upscale``). Write them at the source's fps with ``video_io.write_video``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"restore: expected (T, H, W, 3) uint8 frames, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    windows, fusion = windows or WindowOptions(), fusion or FusionOptions()
    names = pipe.branch_names()
    wanted = Step1Options(outputs=outputs).resolve_outputs(len(names) - 1)
    N, h, w = frames.shape[:3]
    clip = plan_clip(N, h, w, names, wanted, upscale)
    if prompts is not None:
        prompt_clip(pipe, prompts, "clip", N, lambda i: frames[i])
    sink = MemorySink(clip, windows, fusion, pipe.device)
    deliver(PixelWindows(pipe, clip, windows, functools.partial(ArrayReader, frames)), sink)
    return sink.close()
