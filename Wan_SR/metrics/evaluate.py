"""Driver of ``eval_metrics.py``: score predicted videos (against ground truth) frame by frame.

Inputs (``--pred``, optional ``--gt``) are folders of videos and/or frame folders, paired by
base name (:func:`Wan_SR.data.video_io.stem`); a single video file or a single frame folder is
accepted too. Each pair is cut to the common frame count and the common size (top-left, or
centred with ``is_center``), with a printed notice, then streamed chunk by chunk through
:class:`Wan_SR.data.video_io.FrameReader` (never a whole video in memory) while every metric
keeps a running sum.

Scores: a sample's value for a metric is the mean of its per-frame scores (ewarp: mean over
consecutive frame pairs, see :mod:`Wan_SR.metrics.temporal`); ``average`` is the unweighted
mean over the samples that have a value. ``--crop`` removes that many pixels from each border
before the full-reference metrics only. Output: ``metrics_<names joined by _>.json`` with
``per_sample``, ``average``, ``count``, ``settings`` (plus ``notes`` and ``errors``), written to
a temporary name and renamed. Non-finite values are stored as null, never as Infinity/NaN.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from Wan_SR.data.video_io import (FrameReader, VideoError, is_frame_folder, list_inputs, probe,
                                  stem)

EWARP = "ewarp"
DEFAULT_METRICS = "psnr,ssim"
DEFAULT_CHUNK = 8


class EvalError(RuntimeError):
    """A setup problem that stops the whole evaluation (bad arguments, missing weights, ...)."""


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


def output_path(out: str | os.PathLike, names: Sequence[str]) -> Path:
    return Path(out) / f"metrics_{'_'.join(names)}.json"


def collect_inputs(path: str | os.PathLike, what: str
                   ) -> tuple[dict[str, Path], dict[str, str], bool]:
    """{base name: path} of the samples at ``path`` (a folder of videos / frame folders, a single
    video file or a single frame folder), {name: error} for duplicated base names, and whether
    ``path`` is itself a single sample."""
    p = Path(path)
    if not p.exists():
        raise EvalError(f"--{what} {p}: no such file or folder")
    if p.is_file():
        return {stem(p): p}, {}, True
    items = list_inputs(p)
    if not items:
        if is_frame_folder(p):
            return {stem(p): p}, {}, True
        raise EvalError(f"--{what} {p}: holds no videos or frame folders")
    found: dict[str, Path] = {}
    dups: dict[str, str] = {}
    for it in items:
        s = stem(it)
        if s in found:
            dups[s] = f"several inputs named '{s}' in --{what}: {found[s].name}, {it.name}"
        else:
            found[s] = it
    return found, dups, False


def _offsets(full_h: int, full_w: int, h: int, w: int, center: bool) -> tuple[int, int]:
    if not center:
        return 0, 0
    return (full_h - h) // 2, (full_w - w) // 2


def _cut(frames: np.ndarray, h: int, w: int, center: bool) -> np.ndarray:
    y0, x0 = _offsets(frames.shape[1], frames.shape[2], h, w, center)
    return frames[:, y0:y0 + h, x0:x0 + w]


def _finite(v: Optional[float]) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _resolve_device(device: Optional[str]) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
               notice: Callable[[str], None] = print, frame_bar=None) -> dict:
    """Scores of one sample: {metric: value or None}. Frames are streamed ``chunk`` at a time
    and scored ``batch`` at a time."""
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
    pr = FrameReader(pred_path, info=pinfo, chunk=chunk)
    gr = FrameReader(gt_path, info=ginfo, chunk=chunk) if ginfo is not None else None
    if frame_bar is not None:
        frame_bar.reset(total=n)
    try:
        for s in range(0, n, chunk):
            k = min(chunk, n - s)
            P = _cut(pr.get(s, k), h, w, is_center)
            G = _cut(gr.get(s, k), h, w, is_center) if gr is not None else None
            if acc is not None:
                acc.update(P, G)
            if metrics:
                Pt = torch.from_numpy(np.ascontiguousarray(P)).permute(0, 3, 1, 2)
                Gt = torch.from_numpy(np.ascontiguousarray(G)).permute(0, 3, 1, 2) \
                    if G is not None else None
                for b in range(0, k, batch):
                    p = Pt[b:b + batch].to(device)
                    g = Gt[b:b + batch].to(device) if Gt is not None else None
                    for name, m in metrics.items():
                        dtype = torch.float64 if m.classic else torch.float32
                        x = p.to(dtype) / 255.0
                        y = g.to(dtype) / 255.0 if g is not None else None
                        if m.mode == "FR" and crop:
                            x = x[..., crop:-crop, crop:-crop]
                            y = y[..., crop:-crop, crop:-crop]
                        sc = m(x, y if m.mode == "FR" else None)
                        sums[name] += float(sc.sum())
                        counts[name] += sc.size
            if frame_bar is not None:
                frame_bar.update(k)
    finally:
        pr.close()
        if gr is not None:
            gr.close()
    res = {k: (sums[k] / counts[k] if counts[k] else None) for k in metrics}
    if acc is not None:
        res[EWARP] = acc.value()
        if acc.value() is None:
            notice("ewarp undefined (fewer than two frames or every pixel occluded): null")
        elif acc.skipped:
            notice(f"ewarp: {acc.skipped} frame pair(s) fully occluded, skipped")
    for k, v in list(res.items()):
        fv = _finite(v)
        if v is not None and fv is None:
            notice(f"{k} is not finite ({v}): stored as null")
        res[k] = fv
    return res


def evaluate(pred: str | os.PathLike, gt: Optional[str | os.PathLike] = None,
             out: Optional[str | os.PathLike] = None,
             metrics: str | Sequence[str] = DEFAULT_METRICS, crop: int = 0,
             test_y_channel: bool = False, is_center: bool = False, batch_mode: bool = False,
             batch_size: int = 8, device: Optional[str] = None,
             weights_dir: Optional[str | os.PathLike] = None, write_json: bool = True,
             progress: bool = True) -> dict:
    """Score every sample and (with ``write_json``) write the JSON; returns its content.

    Raises :class:`EvalError` for setup problems (and
    :class:`Wan_SR.metrics.weights.MissingWeightsError` for absent weights). Per-sample failures
    are reported, listed under ``errors`` and do not stop the others."""
    from tqdm import tqdm

    from .iqa import PSNR_CAP_DB, Y_COEFFS, Y_OFFSET

    names = parse_metric_names(metrics)
    crop = int(crop)
    if crop < 0:
        raise EvalError("--crop must be >= 0")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise EvalError("--batch_size must be >= 1")
    device = _resolve_device(device)
    weights_dir = str(weights_dir) if weights_dir else None
    if weights_dir and not Path(weights_dir).is_dir():
        raise EvalError(f"--weights_dir {weights_dir}: not a folder")

    preds, errors, pred_single = collect_inputs(pred, "pred")
    gts, gt_dups, gt_single = collect_inputs(gt, "gt") if gt is not None else ({}, {}, False)
    single = pred_single and gt_single  # one file / frame folder against one: pair regardless
    pred_p = Path(pred)
    out_dir = Path(out) if out is not None else (pred_p if pred_p.is_dir() else pred_p.parent)
    notes: dict[str, list[str]] = {}

    def say(name: str, msg: str) -> None:
        notes.setdefault(name, []).append(msg)
        tqdm.write(f"notice: {name}: {msg}")

    pairs: list[tuple[str, Path, Optional[Path]]] = []
    for name, pp in preds.items():
        if name in errors:
            continue
        if gt is not None:
            if name in gt_dups:
                errors[name] = gt_dups[name]
            elif name not in gts:
                if single:
                    gname = next(iter(gts))
                    say(name, f"paired with the only ground truth '{gname}'")
                    pairs.append((name, pp, gts[gname]))
                else:
                    errors[name] = f"no ground truth named '{name}' in --gt {gt}"
            else:
                pairs.append((name, pp, gts[name]))
        else:
            pairs.append((name, pp, None))
    if gt is not None:
        unused = sorted(set(gts) - set(preds))
        if unused and not single:
            tqdm.write(f"notice: {len(unused)} ground-truth input(s) without a prediction, "
                       f"not scored: {', '.join(unused[:10])}{' ...' if len(unused) > 10 else ''}")
    if not pairs and not errors:
        raise EvalError(f"nothing to score in --pred {pred}")

    built = build_metrics(names, gt is not None, device, test_y_channel, weights_dir)
    want_ewarp = EWARP in names
    batch = batch_size if batch_mode else 1
    chunk = max(batch, DEFAULT_CHUNK) if batch_mode else DEFAULT_CHUNK

    per_sample: dict[str, dict] = {}
    t0 = time.time()
    bar = tqdm(pairs, desc="samples", unit="video", disable=not progress, file=sys.stderr)
    fbar = tqdm(total=0, desc="frames", unit="frame", leave=False, disable=not progress,
                file=sys.stderr, position=1)
    try:
        for name, pp, gp in bar:
            bar.set_postfix_str(name)
            try:
                scores = score_pair(pp, gp, built, want_ewarp, crop=crop, is_center=is_center,
                                    batch=batch, chunk=chunk, device=device,
                                    notice=lambda m, _n=name: say(_n, m), frame_bar=fbar)
                per_sample[name] = {k: scores[k] for k in names}
            except KeyboardInterrupt:
                raise
            except Exception as e:  # reported by name; the other samples are still scored
                msg = f"{type(e).__name__}: {e}"
                errors[name] = msg
                tqdm.write(f"error: {name}: {msg}", file=sys.stderr)
    finally:
        fbar.close()
        bar.close()

    average = {}
    for k in names:
        vals = [v[k] for v in per_sample.values() if v.get(k) is not None]
        average[k] = _finite(float(np.mean(vals))) if vals else None
        if len(vals) != len(per_sample):
            notes.setdefault("_average", []).append(
                f"{k}: averaged over {len(vals)} of {len(per_sample)} samples (others null)")
    try:
        import pyiqa

        pyiqa_version = getattr(pyiqa, "__version__", None)
    except Exception:
        pyiqa_version = None
    result = {
        "per_sample": per_sample,
        "average": average,
        "count": len(per_sample),
        "settings": {
            "gt": str(gt) if gt is not None else None,
            "pred": str(pred),
            "out": str(out_dir),
            "metrics": names,
            "crop": crop,
            "test_y_channel": bool(test_y_channel),
            "is_center": bool(is_center),
            "batch_mode": bool(batch_mode),
            "batch_size": batch_size,
            "device": device,
            "weights_dir": weights_dir,
            "lower_better": {k: (True if k == EWARP else built[k].lower_better) for k in names},
            "psnr_cap_db": PSNR_CAP_DB,
            "y_channel": f"Y = {Y_COEFFS[0]} R + {Y_COEFFS[1]} G + {Y_COEFFS[2]} B + "
                         f"{Y_OFFSET} on [0,1] RGB (psnr/ssim only)",
            "averaging": "per sample: mean over frames (ewarp: over frame pairs); "
                         "average: unweighted mean over samples",
            "pyiqa_version": pyiqa_version,
            "seconds": round(time.time() - t0, 3),
        },
        "notes": notes,
        "errors": errors,
    }
    if write_json:
        path = output_path(out_dir, names)
        _write_json(path, result)
        tqdm.write(f"wrote {path}")
    return result


def main(args) -> int:
    """Run from parsed ``eval_metrics.py`` arguments; returns the exit status
    (0 ok, 1 some samples failed, 2 nothing scored: bad arguments, missing weights, ...)."""
    from .weights import MissingWeightsError

    try:
        res = evaluate(pred=args.pred, gt=args.gt, out=args.out, metrics=args.metrics,
                       crop=args.crop, test_y_channel=args.test_y_channel,
                       is_center=args.is_center, batch_mode=args.batch_mode,
                       batch_size=args.batch_size, device=args.device,
                       weights_dir=args.weights_dir)
    except (EvalError, MissingWeightsError, VideoError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, v in res["average"].items():
        print(f"{k}: {v}")
    if res["errors"]:
        print(f"error: {len(res['errors'])} sample(s) failed: {', '.join(res['errors'])}",
              file=sys.stderr)
        return 1
    return 0
