"""Scoring one (prediction, ground truth) pair frame by frame: metric names, the pyiqa metrics and
the ewarp accumulator, streamed chunk by chunk (docs/method.md, "Evaluation").

A sample's value for a metric is the mean of its per-frame scores (ewarp: mean over consecutive
frame pairs, see :mod:`Wan_SR.metrics.temporal`). Non-finite values become None. A metric that
fails on a sample (e.g. ``ms_ssim`` on frames smaller than its filter pyramid) is reported by
name and the other metrics of the sample are still scored.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from pyiqa.default_model_configs import DEFAULT_CONFIGS

from Wan_SR.data.video_io import FrameReader, VideoInfo, probe
from .iqa import IQAMetric, MetricError, available_metrics, metric_mode
from .raft_ewarp import SCALE as RAFT_SCALE
from .temporal import EWARP_SCALE, EwarpAccumulator
from .video_level import EWARP_RAFT, NAMES as VIDEO_LEVEL_NAMES, VideoLevel

log = logging.getLogger(__name__)

EWARP = "ewarp"
OWN_METRICS = (EWARP,) + VIDEO_LEVEL_NAMES  # not pyiqa's: ours (ewarp, ewarp_raft, dover*, ...)
DEFAULT_METRICS = "psnr,ssim"
DEFAULT_CHUNK = 8


class EvalError(RuntimeError):
    """A setup problem that stops the whole evaluation (bad arguments, missing weights, ...)."""


class MetricFailed(RuntimeError):
    """One metric could not score a sample (the message names the metric and the reason)."""


def parse_metric_names(metrics: str | Sequence[str]) -> list[str]:
    """Comma list (or sequence) -> de-duplicated names in order; pyiqa names matched
    case-insensitively to their canonical spelling."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = []
    for raw in items:
        n = raw.strip()
        if n and n not in names:
            names.append(n)
    if not names:
        raise EvalError("no metric requested (--metrics is empty)")
    canon = []
    lookup = None
    for n in names:
        if n.lower() in OWN_METRICS:
            canon.append(n.lower())
            continue
        if lookup is None:
            lookup = {k.lower(): k for k in DEFAULT_CONFIGS}
        if n.lower() not in lookup:
            raise EvalError(f"unknown metric '{n}'. Known: {', '.join(available_metrics())}, "
                            f"{', '.join(OWN_METRICS)}")
        canon.append(lookup[n.lower()])
    out = []
    for n in canon:
        if n not in out:
            out.append(n)
    return out


def _offsets(full_h: int, full_w: int, h: int, w: int, center: bool) -> tuple[int, int]:
    if not center:
        return 0, 0
    return (full_h - h) // 2, (full_w - w) // 2


def _cut(frames: np.ndarray, h: int, w: int, center: bool) -> np.ndarray:
    y0, x0 = _offsets(frames.shape[1], frames.shape[2], h, w, center)
    return frames[:, y0:y0 + h, x0:x0 + w]


def finite_or_none(v: Optional[float]) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def build_metrics(names: Sequence[str], have_gt: bool, device: str, test_y_channel: bool,
                  weights_dir: Optional[str]) -> dict:
    """{name: IQAMetric} for the pyiqa names (ours are handled separately). Checks every name
    and FR-needs-GT before building anything, then builds all (weights are checked here)."""
    iqa_names = [n for n in names if n not in OWN_METRICS]
    for n in iqa_names:
        try:
            mode = metric_mode(n)
        except MetricError as e:
            raise EvalError(str(e)) from e
        if mode == "FR" and not have_gt:
            raise EvalError(f"metric '{n}' is full-reference: pass --gt")
    built = {}
    for n in iqa_names:
        try:
            built[n] = IQAMetric(n, device=device, test_y_channel=test_y_channel,
                                 weights_dir=weights_dir)
        except MetricError as e:
            raise EvalError(str(e)) from e
    return built


def common_size(pinfo: VideoInfo, ginfo: Optional[VideoInfo], is_center: bool,
                notice: Callable[[str], None]) -> tuple[int, int, int]:
    """(frames, height, width) both videos have: the prediction's, cut to the ground truth's
    frame count and size where those are smaller (each cut said in a notice)."""
    n, h, w = pinfo.num_frames, pinfo.height, pinfo.width
    if ginfo is None:
        return n, h, w
    if ginfo.num_frames != pinfo.num_frames:
        n = min(ginfo.num_frames, pinfo.num_frames)
        notice(f"frame count differs (gt {ginfo.num_frames}, pred {pinfo.num_frames}): "
               f"scoring the first {n} frames")
    if (ginfo.height, ginfo.width) != (pinfo.height, pinfo.width):
        h, w = min(ginfo.height, pinfo.height), min(ginfo.width, pinfo.width)
        notice(f"size differs (gt {ginfo.width}x{ginfo.height}, pred {pinfo.width}x"
               f"{pinfo.height}): both cut to {w}x{h} ({'centre' if is_center else 'top-left'})")
    return n, h, w


def _as_tensor(frames: Optional[np.ndarray]):
    """(n, H, W, 3) uint8 -> (n, 3, H, W) uint8 tensor (None stays None)."""
    if frames is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class PairScores:
    """The running per-frame sums of one pair's metrics, its ewarp, and (with ``extras``) its
    ewarp_raft and the frames the whole-video metrics read. A metric that raises is dropped:
    with ``failed``, ``failed(metric, reason)`` is called and the others go on; without,
    :class:`MetricFailed` naming it is raised. With ``curves``, the per-frame values are kept
    (``self.curves``: {metric: [value per frame]}, ewarp metrics: one value per frame pair)."""

    def __init__(self, metrics: dict, want_ewarp: bool,
                 failed: Optional[Callable[[str, str], None]] = None,
                 extras: Optional[VideoLevel] = None, curves: bool = False):
        self.metrics = metrics
        self.want_ewarp = want_ewarp
        self.active = dict(metrics)  # the metrics that have not failed
        self.sums = {k: 0.0 for k in metrics}
        self.counts = {k: 0 for k in metrics}
        self.ewarp = EwarpAccumulator() if want_ewarp else None
        self.extras = extras
        self.raft = extras.new_ewarp() if extras is not None else None
        self.frames: dict = {}  # {index: frame} kept for the whole-video metrics
        self.needed: set = set()
        self.curves = {k: [] for k in metrics} if curves else None
        self._failed = failed

    @property
    def done(self) -> bool:
        """Every metric failed: nothing left to read frames for."""
        return not self.active and self.ewarp is None and self.raft is None and not self.needed

    def _drop(self, name: str, e: Exception) -> None:
        reason = f"{type(e).__name__}: {e}"
        if self._failed is None:
            raise MetricFailed(f"{name}: {reason}") from e
        self._failed(name, reason)
        self.active.pop(name, None)

    def add_ewarp(self, pred: np.ndarray, gt: Optional[np.ndarray]) -> None:
        if self.ewarp is not None:
            try:
                self.ewarp.update(pred, gt)
            except Exception as e:  # noqa: BLE001 - reported by name, others go on
                self._drop(EWARP, e)
                self.ewarp = None
        if self.raft is not None:
            try:
                self.raft.update(pred)
            except Exception as e:  # noqa: BLE001 - reported by name, others go on
                self._drop(EWARP_RAFT, e)
                self.raft = None

    def keep_frames(self, pred: np.ndarray, start: int) -> None:
        """Keep the frames of this chunk (first index ``start``) the whole-video metrics read."""
        for i in range(pred.shape[0]):
            if start + i in self.needed:
                self.frames[start + i] = pred[i].copy()

    def add_batch(self, p, g, crop: int) -> None:
        """One batch of uint8 (b, 3, H, W) tensors (``g`` None without ground truth), scored by
        every active metric in its precision, full-reference ones after the border crop."""
        for name, m in list(self.active.items()):
            dtype = torch.float64 if m.classic else torch.float32
            x = p.to(dtype) / 255.0
            y = g.to(dtype) / 255.0 if g is not None else None
            if m.mode == "FR" and crop:
                x = x[..., crop:-crop, crop:-crop]
                y = y[..., crop:-crop, crop:-crop]
            try:
                sc = m(x, y if m.mode == "FR" else None)
            except Exception as e:  # noqa: BLE001 - reported by name, others go on
                self._drop(name, e)
                continue
            self.sums[name] += float(sc.sum())
            self.counts[name] += sc.size
            if self.curves is not None:
                self.curves[name].extend(finite_or_none(v) for v in np.ravel(sc))

    def add_chunk(self, pred: np.ndarray, gt: Optional[np.ndarray], batch: int, device: str,
                  crop: int) -> None:
        """A chunk of (k, H, W, 3) uint8 frames: ewarp, then the metrics ``batch`` at a time."""
        self.add_ewarp(pred, gt)
        if not self.active:
            return
        pt, gt_t = _as_tensor(pred), _as_tensor(gt)
        for b in range(0, pred.shape[0], batch):
            self.add_batch(pt[b:b + batch].to(device),
                           gt_t[b:b + batch].to(device) if gt_t is not None else None, crop)

    def video_scores(self, n: int) -> dict:
        """The whole-video metrics on the kept frames ({} without them; a failure is dropped by
        name)."""
        if self.extras is None or not self.extras.wants_frames:
            return {}
        try:
            return self.extras.score(n, self.frames)
        except Exception as e:  # noqa: BLE001 - reported by name, others go on
            for name in self.extras.names:
                if name != EWARP_RAFT:
                    self._drop(name, e)
            return {}
        finally:
            self.frames = {}

    def _ewarp_results(self, notice: Callable[[str], None]) -> dict:
        res = {}
        if self.want_ewarp:
            res[EWARP] = self.ewarp.value() if self.ewarp is not None else None
            if self.curves is not None and self.ewarp is not None:
                self.curves[EWARP] = [None if e is None else EWARP_SCALE * e
                                      for e in self.ewarp.errors]
        if self.ewarp is not None:
            if self.ewarp.value() is None:
                notice("ewarp undefined (fewer than two frames or every pixel occluded): null")
            elif self.ewarp.skipped:
                notice(f"ewarp: {self.ewarp.skipped} frame pair(s) fully occluded, skipped")
        if self.extras is not None and EWARP_RAFT in self.extras.names:
            res[EWARP_RAFT] = self.raft.value() if self.raft is not None else None
            if self.curves is not None and self.raft is not None:
                self.curves[EWARP_RAFT] = [RAFT_SCALE * e for e in self.raft.errors]
        return res

    def result(self, notice: Callable[[str], None], video: Optional[dict] = None) -> dict:
        """{metric: mean over frames, or None} (ewarp metrics and whole-video ones after);
        non-finite values become None."""
        res = {k: (self.sums[k] / self.counts[k] if self.counts[k] and k in self.active else None)
               for k in self.metrics}
        res.update(self._ewarp_results(notice))
        if self.extras is not None:
            for k in self.extras.names:
                if k != EWARP_RAFT:
                    res[k] = (video or {}).get(k)
        for k, v in list(res.items()):
            fv = finite_or_none(v)
            if v is not None and fv is None:
                notice(f"{k} is not finite ({v}): stored as null")
            res[k] = fv
        return res


def score_pair(pred_path: Path, gt_path: Optional[Path], metrics: dict, want_ewarp: bool,
               crop: int = 0, is_center: bool = False, batch: int = 1,
               chunk: int = DEFAULT_CHUNK, device: str = "cpu",
               notice: Callable[[str], None] = log.info, frame_bar=None,
               failed: Optional[Callable[[str, str], None]] = None,
               extras: Optional[VideoLevel] = None, curves: Optional[dict] = None) -> dict:
    """Scores of one sample: {metric: value or None}. Frames are streamed ``chunk`` at a time
    and scored ``batch`` at a time. A metric that raises: with ``failed``, ``failed(metric,
    reason)`` is called, the metric is dropped (its value None) and the others go on; without,
    :class:`MetricFailed` naming it is raised. ``extras``: ewarp_raft and the whole-video
    metrics (:mod:`.video_level`); a ``curves`` dict is filled with the per-frame values."""
    pinfo = probe(pred_path)
    ginfo = probe(gt_path) if gt_path is not None else None
    n, h, w = common_size(pinfo, ginfo, is_center, notice)
    if crop and any(m.mode == "FR" for m in metrics.values()) and (2 * crop >= h or 2 * crop >= w):
        raise ValueError(f"--crop {crop} leaves nothing of a {w}x{h} frame")
    scores = PairScores(metrics, want_ewarp, failed, extras, curves is not None)
    if extras is not None and extras.wants_frames:
        scores.needed = extras.needed(n)
    pr = FrameReader(pred_path, info=pinfo, chunk=chunk)
    gr = FrameReader(gt_path, info=ginfo, chunk=chunk) if ginfo is not None else None
    if frame_bar is not None:
        frame_bar.reset(total=n)
    try:
        for s in range(0, n, chunk):
            if scores.done:
                break
            k = min(chunk, n - s)
            pred = _cut(pr.get(s, k), h, w, is_center)
            gt = _cut(gr.get(s, k), h, w, is_center) if gr is not None else None
            scores.keep_frames(pred, s)
            scores.add_chunk(pred, gt, batch, device, crop)
            if frame_bar is not None:
                frame_bar.update(k)
    finally:
        pr.close()
        if gr is not None:
            gr.close()
    scores.needed = set()
    res = scores.result(notice, scores.video_scores(n))
    if curves is not None:
        curves.update(scores.curves)
    return res
