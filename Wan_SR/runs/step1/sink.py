"""Where step 1's frames go: chunks ``{branch: (n,3,H,W) in [0,1]}`` from a source are rendered
to output frames (uint8; ``final`` = the frequency-domain update of base and the last draft
branch, with the same fusion options and tiles as ``inference_step_2.py``, from the in-memory
frames) and written in frame order.

- :class:`VideoSink`: one streamed writer per output of one video, each output recorded when
  complete; a context manager that aborts every writer on any error (no partial file
  survives).
- :class:`MemorySink`: the outputs as arrays (the Python API, :func:`Wan_SR.runs.step1.restore`).

Both have ``render(chunk)`` (may run on any process), ``write(frames)`` and ``close()``.
"""
from __future__ import annotations

import numpy as np

from Wan_SR.core.options import FINAL, FusionOptions, WindowOptions
from Wan_SR.core.profile import span
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video
from ..common import Records
from ..outputs import OutputWriters, WriterSink
from .plan import ClipPlan, VideoJob


class BranchFrames:
    """Chunks of branch frames -> {output: (n,H,W,3) uint8}: every branch that is an output,
    and 'final' when base and the last draft branch are both in the chunk. ``made``: the frames
    of the first decoded branch rendered so far (every frame of the clip once)."""

    def __init__(self, clip: ClipPlan, windows: WindowOptions, fusion: FusionOptions, device):
        self.clip, self.device = clip, device
        self.fusion_kw = fusion.kwargs(windows)
        self.made = 0

    def render(self, chunk: dict) -> dict:
        with span("render"):
            return self._render(chunk)

    def _render(self, chunk: dict) -> dict:
        c = self.clip
        # converted on the device; copied down while the next window runs (HostFrames)
        out = {b: video_io.tensor_to_frames(f, wait=False) for b, f in chunk.items()
               if b in c.outputs}
        base, last = c.names[0], c.names[-1]
        if FINAL in c.outputs and base in chunk and last in chunk and chunk[base].shape[0]:
            with span("fuse"):
                fused = fuse_video(chunk[base].to(self.device), chunk[last].to(self.device),
                                   **self.fusion_kw)
            out[FINAL] = video_io.tensor_to_frames(fused, wait=False)
        if c.decode[0] in chunk:
            self.made += chunk[c.decode[0]].shape[0]
        return out


class VideoSink(WriterSink):
    """The outputs of one video (:class:`~Wan_SR.runs.outputs.WriterSink`): one streamed
    writer per output, at the input's rate, with its audio (``job.audio``) and pixel aspect."""

    def __init__(self, job: VideoJob, windows: WindowOptions, fusion: FusionOptions,
                 save_quality: float, records: Records, device, together: bool = False,
                 show_progress: bool = True):
        info = job.info
        writers = OutputWriters(
            records, {o: job.path(o) for o in job.clip.outputs}, info.num_frames, job.name,
            fps=info.rate, size=(job.clip.width, job.clip.height), quality=save_quality,
            audio_from=job.audio, audio_codec=info.audio_codec, background=True, sar=info.sar)
        super().__init__(writers, together, show_progress)
        self.frames = BranchFrames(job.clip, windows, fusion, device)

    def render(self, chunk: dict) -> dict:
        return self.frames.render(chunk)


class MemorySink:
    """The outputs of a clip in memory: :meth:`close` returns {output: (T,H,W,3) uint8}."""

    def __init__(self, clip: ClipPlan, windows: WindowOptions, fusion: FusionOptions, device):
        self.frames = BranchFrames(clip, windows, fusion, device)
        self.parts: dict = {o: [] for o in clip.outputs}

    def render(self, chunk: dict) -> dict:
        return self.frames.render(chunk)

    def note(self, text: str) -> None:
        pass

    def write(self, frames: dict) -> None:
        for o, f in frames.items():
            self.parts[o].append(f)

    def close(self) -> dict:
        return {o: np.concatenate([np.asarray(f) for f in p], 0) for o, p in self.parts.items()}
