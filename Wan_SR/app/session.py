"""The runs of one app: each restore makes a :class:`Run` (its input, its outputs on disk in
``runs/<id>/<branch>/<name>.mp4`` as step 1 lays them out, and the tuned fusions made from
it), kept by id in a :class:`RunStore`. The page holds only a run's id; the files are found
here, never from a path in a request."""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from Wan_SR.data import video_io
from .safety import UserError

INPUT = "input"  # the label of a run's input among its videos


@dataclass
class Run:
    """One finished restore."""
    id: str
    name: str                      # the outputs' base name
    input: video_io.VideoInfo      # the (checked) input
    folder: Path                   # runs/<id>: step 1's output folder of this run
    outputs: dict                  # {branch: path} written by step 1
    settings: dict                 # what the user chose (shown with the run)
    tuned: dict = field(default_factory=dict)  # {label: path} of whole-clip fusions

    @property
    def num_frames(self) -> int:
        return self.input.num_frames

    def video(self, label: str) -> Path:
        """The input or an output of this run, by label."""
        if label == INPUT:
            return self.input.path
        if label in self.outputs:
            return Path(self.outputs[label])
        if label in self.tuned:
            return Path(self.tuned[label])
        raise UserError(f"this run has no {label!r}; choose one of {self.labels()}")

    def download(self, label: str) -> Path:
        """The video ``label`` under a name that says which it is (``<name>_<label>.mp4``, a
        hard link beside the run's outputs; a copy where links do not work)."""
        src = self.video(label)
        dst = self.folder / "downloads" / f"{self.name}_{label.replace(':', '_')}{src.suffix}"
        if not dst.exists():
            dst.parent.mkdir(exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        return dst

    def labels(self) -> list[str]:
        return [INPUT, *self.outputs, *self.tuned]

    def frame(self, label: str, index: int) -> np.ndarray:
        """Frame ``index`` (clamped to the clip) of the input or an output, (H, W, 3) uint8."""
        index = int(min(max(int(index), 0), self.num_frames - 1))
        return read_frame(str(self.video(label)), index)


@functools.lru_cache(maxsize=64)
def read_frame(path: str, index: int) -> np.ndarray:
    """One decoded frame (cached: scrubbing back and forth decodes each frame once)."""
    frame = video_io.read_frame(path, index, info=probe(path))
    frame.setflags(write=False)
    return frame


@functools.lru_cache(maxsize=64)
def probe(path: str) -> video_io.VideoInfo:
    return video_io.probe(path)


class RunStore:
    """The finished runs by id, the newest last; beyond ``max_runs`` the oldest run and its
    files go (``on_drop(run)`` is told first)."""

    def __init__(self, folder: Path, max_runs: int, on_drop=None):
        self.folder, self.max_runs, self.on_drop = Path(folder), max_runs, on_drop
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def new_folder(self) -> tuple[str, Path]:
        """A fresh run id and its (new) folder."""
        with self.lock:
            rid = f"run{next(self._ids)}"
        folder = self.folder / rid
        folder.mkdir(parents=True)
        return rid, folder

    def add(self, run: Run) -> Run:
        with self.lock:
            self.runs[run.id] = run
            old = [self.runs.popitem(last=False)[1]
                   for _ in range(max(0, len(self.runs) - self.max_runs))]
        for r in old:
            self.drop(r)
        return run

    def drop(self, run: Run) -> None:
        if self.on_drop is not None:
            self.on_drop(run)
        shutil.rmtree(run.folder, ignore_errors=True)

    def get(self, run_id: Optional[str]) -> Run:
        with self.lock:
            run = self.runs.get(run_id) if run_id else None
        if run is None:
            raise UserError("no finished run here yet (or it was removed as one of the oldest): "
                            "restore a video in the Restore tab first")
        return run
