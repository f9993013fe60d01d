"""Writing the outputs of one video, shared by step 1 and step 2: one streamed writer per
output, each output recorded when complete (:class:`~Wan_SR.runs.common.Records`), and the sink
the loops hand chunks to (:func:`Wan_SR.runs.parallel.deliver`)."""
from __future__ import annotations

from Wan_SR.core.distributed import current, on_main
from Wan_SR.core.log import progress
from Wan_SR.core.profile import span
from Wan_SR.data import video_io
from .common import Records


class OutputWriters:
    """The streamed writers of one video's outputs ``paths`` = {key: path}, each output
    recorded by ``records`` once complete.

    :meth:`open` opens them all (aborting those already open if one fails); :meth:`write` takes
    {key: uint8 frames}; :meth:`close` checks that each got ``num_frames`` frames, then closes
    and records them ({key: path}); :meth:`abort` stops them all and removes their partial
    files, so nothing half-written survives. ``writer_kw``: the
    :class:`~Wan_SR.data.video_io.VideoWriter` settings they share."""

    def __init__(self, records: Records, paths: dict, num_frames: int, what: str, **writer_kw):
        self.records, self.paths, self.num_frames, self.what = records, paths, num_frames, what
        self.writer_kw = writer_kw
        self.writers: dict = {}

    def open(self) -> None:
        try:
            for key, path in self.paths.items():
                self.writers[key] = self.records.open_writer(path, **self.writer_kw)
        except BaseException:
            self.abort()
            raise

    def write(self, frames: dict) -> None:
        for key, f in frames.items():
            self.writers[key].write(f)

    def close(self) -> dict:
        for key, wr in self.writers.items():
            if wr.frames_written != self.num_frames:
                raise video_io.VideoError(f"{self.what}: {key} got {wr.frames_written} of "
                                          f"{self.num_frames} frames")
        for wr in self.writers.values():  # the encoders finish their last frames together
            wr.end_input()
        return {key: self.records.close_writer(wr) for key, wr in self.writers.items()}

    def abort(self) -> None:
        for wr in self.writers.values():
            wr.abort()


class WriterSink:
    """A sink of :func:`~Wan_SR.runs.parallel.deliver` that writes through
    :class:`OutputWriters`: ``with sink:`` opens the writers and aborts them all on any error;
    :meth:`write` takes rendered {key: uint8 frames} (a progress bar counts the frames of the
    first output); :meth:`close` checks, closes and records the outputs ({key: path}).
    Subclasses give :meth:`render` (chunk -> {key: uint8 frames}).

    ``together``: every process makes and renders parts of this video; the main process opens,
    writes and closes (an error there is raised on every process)."""

    def __init__(self, writers: OutputWriters, together: bool = False,
                 show_progress: bool = True):
        self.writers, self.together = writers, together
        self.first = next(iter(writers.paths))
        self.bar = progress(enabled=show_progress and (not together or current().is_main),
                            total=writers.num_frames, desc=writers.what, unit="frame")

    def render(self, chunk: dict) -> dict:
        raise NotImplementedError

    def __enter__(self):
        try:
            self._on_writer(self.writers.open)
        except BaseException:
            self.bar.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.writers.abort()
        self.bar.close()
        return False

    def _on_writer(self, fn):
        """``fn()`` where the writers are: here, or on the main process for every process."""
        return on_main(fn) if self.together else fn()

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def write(self, frames: dict) -> None:
        with span("write"):  # waits only when a writer's queue is full
            self.writers.write(frames)
        if self.first in frames:  # each output gets every frame once
            self.bar.update(frames[self.first].shape[0])

    def close(self) -> dict:
        with span("close"):  # the encoders finish their last frames
            return self._on_writer(self.writers.close) or {}

    def close_or_abort(self) -> dict:
        """:meth:`close`, outside the ``with`` block (on another thread): on any error every
        writer is aborted, as leaving the block with the error would."""
        try:
            return self.close()
        except BaseException:
            self.writers.abort()
            raise
