"""The loop of ``eval_metrics.py``: score predicted videos (against ground truth), pair by pair.

Inputs (``--pred``, optional ``--gt``) are folders of videos and/or frame folders, paired by
base name (:func:`Wan_SR.data.video_io.stem`); a single video file or a single frame folder is
accepted too. Each pair is cut to the common frame count and the common size (top-left, or
centred with ``is_center``), with a logged notice, and scored by
:func:`Wan_SR.metrics.score.score_pair` (streamed, never a whole video in memory).

``average`` is the unweighted mean over the samples that have a value. Output:
``metrics_<names joined by _>.json`` with ``per_sample``, ``average``, ``count``, ``settings``
(plus ``notes`` and ``errors``), written atomically. Non-finite values are stored as null.
``errors``: {sample: reason} for a sample not scored at all, {sample: {metric: reason}} for a
sample some metrics failed on (its other metrics are in ``per_sample``, the failed ones null).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.distributed import all_gather, current
from Wan_SR.core.files import write_json_atomic
from Wan_SR.core.log import progress as progress_bar
from Wan_SR.core.options import path_or_none
from Wan_SR.data.video_io import VideoError, is_frame_folder, list_inputs, probe, stem
from Wan_SR.metrics.score import (DEFAULT_CHUNK, DEFAULT_METRICS, EWARP, EvalError, build_metrics,
                                  finite_or_none, parse_metric_names, score_pair)
from .parallel import pixel_frames, share_work

log = logging.getLogger(__name__)

__all__ = ["EvalError", "collect_inputs", "evaluate", "main", "output_path", "score_pair"]


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


def evaluate(pred: str | os.PathLike, gt: Optional[str | os.PathLike] = None,
             out: Optional[str | os.PathLike] = None,
             metrics: str | Sequence[str] = DEFAULT_METRICS, crop: int = 0,
             test_y_channel: bool = False, is_center: bool = False, batch_mode: bool = False,
             batch_size: int = 8, device: Optional[str] = None,
             weights_dir: Optional[str | os.PathLike] = None, write_json: bool = True,
             progress: bool = True) -> dict:
    """Score every sample and (with ``write_json``) write the JSON; returns its content.

    Raises :class:`EvalError` for setup problems (and
    :class:`Wan_SR.metrics.weights.MissingWeightsError` for absent weights). Per-sample and
    per-metric failures are reported by name, listed under ``errors`` and do not stop the
    others. ``gt`` / ``out`` given as '' mean none / the default (the published syntax). The
    ``out`` folder is created only when the JSON is written."""
    from Wan_SR.metrics.iqa import PSNR_CAP_DB, Y_COEFFS, Y_OFFSET

    gt, out = path_or_none(gt), path_or_none(out)

    names = parse_metric_names(metrics)
    crop = int(crop)
    if crop < 0:
        raise EvalError("--crop must be >= 0")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise EvalError("--batch_size must be >= 1")
    device = str(resolve_device(device))
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
        log.info("%s: %s", name, msg)

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
            log.info("%d ground-truth input(s) without a prediction, not scored: %s%s",
                     len(unused), ", ".join(unused[:10]), " ..." if len(unused) > 10 else "")
    if not pairs and not errors:
        raise EvalError(f"nothing to score in --pred {pred}")

    built = build_metrics(names, gt is not None, device, test_y_channel, weights_dir)
    want_ewarp = EWARP in names
    batch = batch_size if batch_mode else 1
    chunk = max(batch, DEFAULT_CHUNK) if batch_mode else DEFAULT_CHUNK

    t0 = time.time()
    # several processes: each scores its share (balanced by frames x pixels), then every
    # process gets every score; merged in the order of ``pairs`` as one process scores them
    share = share_work(pairs, lambda pair: probe(pair[1]), pixel_frames, split="videos")
    # name -> (scores or None, error or None, notices, {metric: why it failed})
    scored: dict[str, tuple] = {}
    bar = progress_bar(share.alone, desc="samples", unit="video", leave=True, enabled=progress)
    fbar = progress_bar(total=0, desc="frames", unit="frame", position=1, enabled=progress)
    try:
        for name, pp, gp in bar:
            bar.set_postfix_str(name)
            notices: list[str] = []
            failures: dict[str, str] = {}

            def notice(msg, _n=name, _notices=notices):
                _notices.append(msg)
                log.info("%s: %s", _n, msg)

            def failed(metric, why, _n=name, _failures=failures):
                _failures[metric] = why
                log.error("%s: %s failed (%s)", _n, metric, why)

            try:
                scores = score_pair(pp, gp, built, want_ewarp, crop=crop, is_center=is_center,
                                    batch=batch, chunk=chunk, device=device, notice=notice,
                                    frame_bar=fbar, failed=failed)
                scored[name] = ({k: scores[k] for k in names}, None, notices, failures)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # reported by name; the other samples are still scored
                msg = f"{type(e).__name__}: {e}"
                scored[name] = (None, msg, notices, failures)
                log.error("%s: %s", name, msg)
    finally:
        fbar.close()
        bar.close()
    for part in all_gather(scored):
        scored.update(part)
    per_sample: dict[str, dict] = {}
    for name, _, _ in pairs:
        scores, error, notices, failures = scored[name]
        if notices:
            notes.setdefault(name, []).extend(notices)
        if error is not None:
            errors[name] = error
            continue
        if failures:
            errors[name] = dict(failures)
        if len(failures) < len(names):  # the metrics that did not fail are kept
            per_sample[name] = scores

    average = {}
    for k in names:
        vals = [v[k] for v in per_sample.values() if v.get(k) is not None]
        average[k] = finite_or_none(float(np.mean(vals))) if vals else None
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
    if write_json and current().is_main:
        path = output_path(out_dir, names)
        write_json_atomic(path, result)
        log.info("wrote %s", path)
    return result


def main(args) -> int:
    """Run from parsed ``eval_metrics.py`` arguments; returns the exit status
    (0 ok, 1 some samples failed, 2 nothing scored: bad arguments, missing weights, ...)."""
    from Wan_SR.metrics.weights import MissingWeightsError

    try:
        res = evaluate(pred=args.pred, gt=args.gt, out=args.out, metrics=args.metrics,
                       crop=args.crop, test_y_channel=args.test_y_channel,
                       is_center=args.is_center, batch_mode=args.batch_mode,
                       batch_size=args.batch_size, device=args.device,
                       weights_dir=args.weights_dir)
    except (EvalError, MissingWeightsError, VideoError, ValueError) as e:
        log.error("%s", e)
        return 2
    if not current().is_main:  # the main process prints and logs the result
        return 1 if res["errors"] else 0
    for k, v in res["average"].items():
        print(f"{k}: {v}")
    if res["errors"]:
        log.error("%d sample(s) failed: %s", len(res["errors"]), ", ".join(
            name if isinstance(why, str) else f"{name} ({', '.join(why)})"
            for name, why in res["errors"].items()))
        return 1
    return 0
