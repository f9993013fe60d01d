"""Compare two folders in the app: videos matched by name exactly as ``eval_metrics.py``
matches them (:func:`Wan_SR.runs.evaluate.pair_inputs`: the reference plays the ground truth),
cut to their common frame count and size as it cuts them
(:func:`Wan_SR.metrics.score.common_size`, top-left), and scored per frame with the same PSNR
and SSIM (:func:`Wan_SR.metrics.score.build_metrics`, RGB, no border crop)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from Wan_SR.data import video_io
from Wan_SR.metrics.score import EvalError, build_metrics, common_size
from Wan_SR.runs.evaluate import pair_inputs
from .safety import Library, UserError, first_line

METRICS = ("psnr", "ssim")
CHUNK = 8


@dataclass
class Match:
    """The pairs of two folders: {name: (reference, result)} and why others were left out."""
    pairs: dict
    problems: list


def match(library: Library, reference: str, result: str) -> Match:
    ref, res = library.folder(reference), library.folder(result)
    try:
        pairing = pair_inputs(res, ref)
    except EvalError as e:
        raise UserError(str(e)) from None
    problems = [f"{name}: {why}" for name, why in pairing.errors.items()]
    return Match({name: (gt, pred) for name, pred, gt in pairing.pairs}, problems)


@functools.lru_cache(maxsize=1)
def _metrics() -> dict:
    return build_metrics(list(METRICS), have_gt=True, device="cpu", test_y_channel=False,
                         weights_dir=None)


def size_of(reference: Path, result: Path) -> tuple[int, int, int]:
    """(frames, height, width) the two are scored on: the common frame count and size."""
    return common_size(video_io.probe(result), video_io.probe(reference), False,
                       lambda msg: None)


@functools.lru_cache(maxsize=16)
def per_frame(reference: Path, result: Path) -> dict:
    """{metric: (n,) float64} per frame, over the common frames and size."""
    n, h, w = size_of(reference, result)
    metrics, out = _metrics(), {m: [] for m in METRICS}
    readers = [video_io.FrameReader(p, chunk=CHUNK) for p in (reference, result)]
    try:
        for s in range(0, n, CHUNK):
            k = min(CHUNK, n - s)
            g, p = (as_unit(r.get(s, k)[:, :h, :w]) for r in readers)
            for m in METRICS:
                out[m].append(metrics[m](p, g))
    except (video_io.VideoError, OSError, ValueError) as e:
        raise UserError(f"{result.name}: cannot score ({first_line(e)})") from None
    finally:
        for r in readers:
            r.close()
    return {m: np.concatenate(v) for m, v in out.items()}


def as_unit(frames: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float64 in [0, 1], as eval_metrics scores PSNR/SSIM."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).double() / 255.0


def frames(reference: Path, result: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of both, cut to the common size."""
    n, h, w = size_of(reference, result)
    index = min(max(int(index), 0), n - 1)
    return tuple(video_io.read_frame(p, index)[:h, :w] for p in (reference, result))
