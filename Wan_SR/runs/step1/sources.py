"""Where step 1's frames come from: a clip read in frame order and restored by the pipeline,
handed out as ``{branch: (n,3,H,W) in [0,1]}`` chunks, each branch in frame order.

- :class:`PixelWindows` (the published method): temporal windows x spatial tiles, each encoded,
  sampled and decoded on its own and blended in pixels (:mod:`Wan_SR.sampling.clip`). Its
  windows may be cut into parts, part ``i`` made by process ``i % size`` (a video every
  process restores together; docs/method.md, "Several processes").
- :class:`LatentWindows` (``--window_space latent``): the clip encoded once, the DiT on latent
  windows, each branch decoded once (:mod:`Wan_SR.sampling.latent_windows`). One part.

A source reads through ``open_reader(**kw)``: a :class:`~Wan_SR.data.video_io.FrameReader` of
the input file, or an :class:`ArrayReader` of frames in memory. ``chunks(part, note)`` yields
the chunks of one part (``note(text)``: progress in words); ``close()`` closes the readers.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from Wan_SR.core.options import FINAL, Step1Config, WindowOptions
from Wan_SR.core.profile import WINDOW, mark, span
from Wan_SR.core.windows import first_window_touching
from Wan_SR.data import video_io
from Wan_SR.sampling.clip import iter_pixel_windows, pixel_window_plan
from Wan_SR.sampling.latent_windows import latent_windows, sample_windows
from Wan_SR.sampling.pipeline import pad_frames, padded_shape
from ..parallel import window_parts
from .plan import ClipPlan, VideoJob

Note = Optional[Callable[[str], None]]


class ArrayReader:
    """:class:`~Wan_SR.data.video_io.FrameReader`'s ``get`` / ``close`` over (T,H,W,3) uint8
    frames held in memory."""

    def __init__(self, frames: np.ndarray, **_reader_kw):
        self.frames = frames

    def get(self, start: int, count: int) -> np.ndarray:
        return self.frames[start:start + count]

    def close(self) -> None:
        pass


def resize_frames(frames: torch.Tensor, clip: ClipPlan) -> torch.Tensor:
    """Input frames (T,3,h,w) in [0,1] -> the processing size (bicubic, ``--upscale``)."""
    if tuple(frames.shape[-2:]) != (clip.height, clip.width):
        frames = F.interpolate(frames, size=(clip.height, clip.width), mode="bicubic",
                               align_corners=False).clamp_(0, 1)
    return frames


class ClipSource:
    """What both sources hold: the pipeline, the clip's plan, the windows, and the reader they
    open with ``open_reader`` (closed by :meth:`close`)."""

    def __init__(self, pipe, clip: ClipPlan, windows: WindowOptions, open_reader: Callable):
        self.pipe, self.clip, self.windows, self.open_reader = pipe, clip, windows, open_reader
        self.reader = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class PixelWindows(ClipSource):
    """The published pixel windows of one clip; ``split``: its windows cut into parts for
    every process (:func:`Wan_SR.runs.parallel.window_parts`), else one part."""

    def __init__(self, pipe, clip: ClipPlan, windows: WindowOptions, open_reader: Callable,
                 split: bool = False):
        super().__init__(pipe, clip, windows, open_reader)
        N = clip.num_frames
        self.t_win, self.starts, _ = pixel_window_plan(N, clip.height, clip.width, windows)
        self.parts = window_parts(len(self.starts), N,
                                  clip.height * clip.width * 3 * len(clip.outputs), split)
        self.read_to = 0

    @property
    def num_parts(self) -> int:
        return len(self.parts)

    def chunks(self, part: int, note: Note = None) -> Iterator[dict]:
        """The frames the windows of part ``part`` finish, exactly as the whole run makes them
        (the windows before its seam are restored too; :func:`iter_pixel_windows`)."""
        k0, k1 = self.parts[part]
        self._read_from(self.starts[first_window_touching(self.starts, self.t_win,
                                                          self.starts[k0])])
        self.read_to = self.starts[k1 - 1]
        on_tile = (lambda k, nk, i, ni: note(f"window {k + 1}/{nk} tile {i + 1}/{ni}")) \
            if note else None
        c = self.clip
        yield from iter_pixel_windows(self.pipe, self._frames, c.num_frames, c.height, c.width,
                                      c.decode, self.windows, on_tile, part=self.parts[part])

    def _read_from(self, first: int) -> None:
        """One reader per process, as its parts come in frame order: a new one only when a part
        starts before the last window read (very long overlaps and short parts)."""
        if first < self.read_to:
            self.close()
        if self.reader is None:
            self.reader = self.open_reader(chunk=8, prefetch=2 * (self.t_win // 8 + 1))

    def _frames(self, start: int, count: int) -> torch.Tensor:
        with span("decode_input"):
            frames = self.reader.get(start, count)
        with span("upload"):
            return resize_frames(video_io.frames_to_tensor(frames, self.pipe.device), self.clip)


def padded_chunks(reader, clip: ClipPlan, device) -> Iterator[torch.Tensor]:
    """The padded clip in the VAE's chunk pattern: frame 0, then 4 frames at a time, each
    (n,3,Hp,Wp) in [0,1] on ``device``; frames past the clip repeat its last frame."""
    N = clip.num_frames
    Tp, Hp, Wp = padded_shape(N, clip.height, clip.width)
    last = None
    a = 0
    while a < Tp:
        b = 1 if a == 0 else a + 4
        if a < N:
            real = video_io.frames_to_tensor(reader.get(a, min(b, N) - a), device)
            real = resize_frames(real, clip)
            last = real[-1:]
        else:
            real = last
        yield pad_frames(real, b - a, Hp, Wp)
        a = b


def decode_groups(clip: ClipPlan) -> list[list[str]]:
    """Branches decoded together: base and the last draft in lockstep when 'final' is written
    (the fusion needs both per chunk), every other branch alone."""
    groups = []
    if FINAL in clip.outputs:
        groups.append([clip.names[0], clip.names[-1]])
    groups += [[b] for b in clip.decode if not any(b in g for g in groups)]
    return groups


class LatentWindows(ClipSource):
    """The latent windows of one clip (``--window_space latent``): one part."""
    num_parts = 1

    def chunks(self, part: int = 0, note: Note = None) -> Iterator[dict]:
        """Encode the clip (streamed), sample every latent window x tile, then decode each
        group of branches (streamed) chunk by chunk."""
        pipe, c, note = self.pipe, self.clip, note or (lambda text: None)
        self.reader = self.open_reader(prefetch=4)
        note("encoding")
        mark(WINDOW, "encode")
        z_l = pipe.encode_streamed(padded_chunks(self.reader, c, pipe.device))
        self.close()
        starts, _, _, boxes, _, _ = latent_windows(z_l.shape, self.windows)
        ticks, n = itertools.count(1), len(starts) * len(boxes)
        mark(WINDOW, "sample")
        volumes = sample_windows(pipe, z_l, c.decode, self.windows,
                                 on_tile=lambda: note(f"window x tile {next(ticks)}/{n}"))
        del z_l
        for group in decode_groups(c):
            note(f"decoding {', '.join(group)}")
            mark(WINDOW, "decode " + "+".join(group))
            chunks = pipe.decode_streamed({b: volumes.pop(b) for b in group}, c.num_frames,
                                          c.height, c.width)
            while True:
                with span("decode"):
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                yield chunk


def open_source(pipe, job: VideoJob, cfg: Step1Config, together: bool = False):
    """The source of one input video: its pixel windows (split into parts for every process
    with ``together``) or, with ``--window_space latent``, its latent windows."""
    open_reader = functools.partial(video_io.FrameReader, job.info.path, info=job.info)
    if cfg.step1.window_space == "latent":
        return LatentWindows(pipe, job.clip, cfg.windows, open_reader)
    return PixelWindows(pipe, job.clip, cfg.windows, open_reader, split=together)
