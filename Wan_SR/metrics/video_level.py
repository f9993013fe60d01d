"""The metrics of ``eval_metrics.py`` that are not per-frame pyiqa metrics and need our own
models: ``ewarp_raft`` (:mod:`.raft_ewarp`) and the whole-video scores ``dover``,
``dover_technical``, ``dover_aesthetic``, ``fastervqa`` (:mod:`.vqa`). Every weight file is
looked up (locally, never downloaded) before any model is built, so a missing file stops the run
before anything is scored, with one message naming it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .raft_ewarp import RAFT_FILE, RAFT_URL, RaftEwarpAccumulator, RaftFlow
from .vqa import (DEFAULT_SEED, DOVER, DOVER_FILE, DOVER_URL, FASTERVQA_FILES, FASTERVQA_URL,
                  VIDEO_METRICS, FasterVQA, middle_indices)
from .weights import find_local_file

EWARP_RAFT = "ewarp_raft"
NAMES = (EWARP_RAFT,) + VIDEO_METRICS
LOWER_BETTER = {EWARP_RAFT: True, **{n: False for n in VIDEO_METRICS}}


@dataclass
class VideoLevel:
    """The requested non-pyiqa metrics of a run and their models."""
    names: list = field(default_factory=list)  # in request order
    raft: Optional[RaftFlow] = None
    dover: Optional[DOVER] = None
    fastervqa: Optional[FasterVQA] = None
    device: str = "cpu"
    seed: int = DEFAULT_SEED

    @property
    def wants_frames(self) -> bool:
        return self.dover is not None or self.fastervqa is not None

    def new_ewarp(self) -> Optional[RaftEwarpAccumulator]:
        return RaftEwarpAccumulator(self.raft, self.device) if self.raft is not None else None

    def needed(self, n: int) -> set:
        """The frame indices the whole-video models read from a video of ``n`` frames."""
        idx: set = set()
        if self.dover is not None:
            for v in DOVER.indices(n, np.random.RandomState(self.seed)).values():
                idx.update(int(i) for i in v)
        if self.fastervqa is not None:
            idx.update(int(i) for i in middle_indices(n, 32))
        return idx

    def score(self, n: int, frames: dict) -> dict:
        """{name: value} of the requested whole-video metrics; ``frames``: {index: (H, W, 3)
        uint8} holding at least :meth:`needed`."""
        def get(idx):
            return {int(i): frames[int(i)] for i in idx}

        out = {}
        if self.dover is not None:
            out.update(self.dover(n, get, self.seed))
        if self.fastervqa is not None:
            out.update(self.fastervqa(n, get, self.seed))
        return {k: v for k, v in out.items() if k in self.names}


def video_level_files(names: Sequence[str], weights_dir: Optional[str]) -> dict:
    """{"raft" / "dover" / "fastervqa": path} of the files ``names`` need, found locally;
    :class:`~.weights.LocalWeightsMissing` names the first one missing."""
    wanted = [n for n in names if n in NAMES]
    paths = {}
    if EWARP_RAFT in wanted:
        paths["raft"] = find_local_file((RAFT_FILE,), weights_dir, EWARP_RAFT, RAFT_URL)
    dover_names = [n for n in wanted if n.startswith("dover")]
    if dover_names:
        paths["dover"] = find_local_file((DOVER_FILE,), weights_dir, dover_names[0], DOVER_URL)
    if "fastervqa" in wanted:
        paths["fastervqa"] = find_local_file(FASTERVQA_FILES, weights_dir, "fastervqa",
                                             FASTERVQA_URL)
    return paths


def build_video_level(names: Sequence[str], device: str, weights_dir: Optional[str] = None,
                      seed: int = DEFAULT_SEED, paths: Optional[dict] = None) -> VideoLevel:
    """The :class:`VideoLevel` of ``names`` (other names ignored); every file is found
    (:func:`video_level_files`, unless ``paths`` gives them) before any model is built."""
    paths = video_level_files(names, weights_dir) if paths is None else paths
    return VideoLevel(
        [n for n in names if n in NAMES],
        RaftFlow(paths["raft"], device) if "raft" in paths else None,
        DOVER(paths["dover"], device) if "dover" in paths else None,
        FasterVQA(paths["fastervqa"], device) if "fastervqa" in paths else None, device, seed)
