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

from Wan_SR.data.video_io import FrameReader, probe

log = logging.getLogger(__name__)

EWARP = "ewarp"
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
        if n.lower() == EWARP:
            canon.append(EWARP)
            continue
        if lookup is None:
            from pyiqa.default_model_configs import DEFAULT_CONFIGS

            lookup = {k.lower(): k for k in DEFAULT_CONFIGS}
        if n.lower() not in lookup:
            from .iqa import available_metrics

            raise EvalError(f"unknown metric '{n}'. Known: {', '.join(available_metrics())}, "
                            f"{EWARP}")
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
    """{name: IQAMetric} for the pyiqa names (ewarp is handled separately). Checks every name
    and FR-needs-GT before building anything, then builds all (weights are checked here)."""
    from .iqa import IQAMetric, MetricError, metric_mode

    iqa_names = [n for n in names if n != EWARP]
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


def score_pair(pred_path: Path, gt_path: Optional[Path], metrics: dict, want_ewarp: bool,
               crop: int = 0, is_center: bool = False, batch: int = 1,
               chunk: int = DEFAULT_CHUNK, device: str = "cpu",
               notice: Callable[[str], None] = log.info, frame_bar=None,
               failed: Optional[Callable[[str, str], None]] = None) -> dict:
    """Scores of one sample: {metric: value or None}. Frames are streamed ``chunk`` at a time
    and scored ``batch`` at a time. A metric that raises: with ``failed``, ``failed(metric,
    reason)`` is called, the metric is dropped (its value None) and the others go on; without,
    :class:`MetricFailed` naming it is raised."""
    import torch
    from .temporal import EwarpAccumulator

    pinfo = probe(pred_path)
    ginfo = probe(gt_path) if gt_path is not None else None
    n, h, w = pinfo.num_frames, pinfo.height, pinfo.width
    if ginfo is not None:
        if ginfo.num_frames != pinfo.num_frames:
            n = min(ginfo.num_frames, pinfo.num_frames)
            notice(f"frame count differs (gt {ginfo.num_frames}, pred {pinfo.num_frames}): "
                   f"scoring the first {n} frames")
        if (ginfo.height, ginfo.width) != (pinfo.height, pinfo.width):
            h, w = min(ginfo.height, pinfo.height), min(ginfo.width, pinfo.width)
            notice(f"size differs (gt {ginfo.width}x{ginfo.height}, pred {pinfo.width}x"
                   f"{pinfo.height}): both cut to {w}x{h} ({'centre' if is_center else 'top-left'})")
    fr = {k: m for k, m in metrics.items() if m.mode == "FR"}
    if fr and crop and (2 * crop >= h or 2 * crop >= w):
        raise ValueError(f"--crop {crop} leaves nothing of a {w}x{h} frame")
    sums = {k: 0.0 for k in metrics}
    counts = {k: 0 for k in metrics}
    acc = EwarpAccumulator() if want_ewarp else None
    active = dict(metrics)  # the metrics that have not failed

    def drop(name: str, e: Exception) -> None:
        reason = f"{type(e).__name__}: {e}"
        if failed is None:
            raise MetricFailed(f"{name}: {reason}") from e
        failed(name, reason)
        active.pop(name, None)

    pr = FrameReader(pred_path, info=pinfo, chunk=chunk)
    gr = FrameReader(gt_path, info=ginfo, chunk=chunk) if ginfo is not None else None
    if frame_bar is not None:
        frame_bar.reset(total=n)
    try:
        for s in range(0, n, chunk):
            if not active and acc is None:  # every metric failed: nothing left to read for
                break
            k = min(chunk, n - s)
            P = _cut(pr.get(s, k), h, w, is_center)
            G = _cut(gr.get(s, k), h, w, is_center) if gr is not None else None
            if acc is not None:
                try:
                    acc.update(P, G)
                except Exception as e:  # noqa: BLE001 - reported by name, others go on
                    drop(EWARP, e)
                    acc = None
            if active:
                Pt = torch.from_numpy(np.ascontiguousarray(P)).permute(0, 3, 1, 2)
                Gt = torch.from_numpy(np.ascontiguousarray(G)).permute(0, 3, 1, 2) \
                    if G is not None else None
                for b in range(0, k, batch):
                    p = Pt[b:b + batch].to(device)
                    g = Gt[b:b + batch].to(device) if Gt is not None else None
                    for name, m in list(active.items()):
                        dtype = torch.float64 if m.classic else torch.float32
                        x = p.to(dtype) / 255.0
                        y = g.to(dtype) / 255.0 if g is not None else None
                        if m.mode == "FR" and crop:
                            x = x[..., crop:-crop, crop:-crop]
                            y = y[..., crop:-crop, crop:-crop]
                        try:
                            sc = m(x, y if m.mode == "FR" else None)
                        except Exception as e:  # noqa: BLE001 - reported by name, others go on
                            drop(name, e)
                            continue
                        sums[name] += float(sc.sum())
                        counts[name] += sc.size
            if frame_bar is not None:
                frame_bar.update(k)
    finally:
        pr.close()
        if gr is not None:
            gr.close()
    res = {k: (sums[k] / counts[k] if counts[k] and k in active else None) for k in metrics}
    if want_ewarp:
        res[EWARP] = acc.value() if acc is not None else None
    if acc is not None:
        if acc.value() is None:
            notice("ewarp undefined (fewer than two frames or every pixel occluded): null")
        elif acc.skipped:
            notice(f"ewarp: {acc.skipped} frame pair(s) fully occluded, skipped")
    for k, v in list(res.items()):
        fv = finite_or_none(v)
        if v is not None and fv is None:
            notice(f"{k} is not finite ({v}): stored as null")
        res[k] = fv
    return res


