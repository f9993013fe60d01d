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
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pyiqa

from Wan_SR.core.devices import resolve_device
from Wan_SR.core.distributed import all_gather, current
from Wan_SR.core.files import write_json_atomic
from Wan_SR.core.log import progress as progress_bar
from Wan_SR.core.options import path_or_none
from Wan_SR.data.video_io import VideoError, is_frame_folder, list_inputs, probe, stem
from Wan_SR.metrics.iqa import PSNR_CAP_DB, Y_COEFFS, Y_OFFSET
from Wan_SR.metrics.score import (DEFAULT_CHUNK, DEFAULT_METRICS, EvalError, EWARP, build_metrics,
                                  finite_or_none, parse_metric_names, score_pair)
from Wan_SR.metrics.video_level import LOWER_BETTER, build_video_level, video_level_files
from Wan_SR.metrics.vqa import DEFAULT_SEED
from Wan_SR.metrics.weights import MissingWeightsError
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


@dataclass(frozen=True)
class _Options:
    """The checked scoring options of one run."""
    names: list
    crop: int
    batch_size: int
    device: str
    weights_dir: Optional[str]


def _checked_options(metrics, crop, batch_size, device, weights_dir) -> _Options:
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
    return _Options(names, crop, batch_size, device, weights_dir)


@dataclass
class Pairing:
    """The (name, prediction, ground truth or None) pairs to score, in order, and what was
    said about the inputs: {name: error} for those not scored, {name: [notes]}."""
    pairs: list[tuple[str, Path, Optional[Path]]]
    errors: dict[str, object]
    notes: dict[str, list[str]]


def pair_inputs(pred: str | os.PathLike, gt: Optional[str | os.PathLike]) -> Pairing:
    """Pair the samples of ``pred`` with those of ``gt`` by base name; one file or frame folder
    against one is paired whatever their names."""
    preds, errors, pred_single = collect_inputs(pred, "pred")
    if gt is None:
        return Pairing([(name, pp, None) for name, pp in preds.items() if name not in errors],
                       errors, {})
    gts, gt_dups, gt_single = collect_inputs(gt, "gt")
    single = pred_single and gt_single
    pairs, notes = [], {}
    for name, pp in preds.items():
        if name in errors:
            continue
        if name in gt_dups:
            errors[name] = gt_dups[name]
        elif name in gts:
            pairs.append((name, pp, gts[name]))
        elif single:
            gname = next(iter(gts))
            notes[name] = [f"paired with the only ground truth '{gname}'"]
            log.info("%s: %s", name, notes[name][0])
            pairs.append((name, pp, gts[gname]))
        else:
            errors[name] = f"no ground truth named '{name}' in --gt {gt}"
    unused = sorted(set(gts) - set(preds))
    if unused and not single:
        log.info("%d ground-truth input(s) without a prediction, not scored: %s%s",
                 len(unused), ", ".join(unused[:10]), " ..." if len(unused) > 10 else "")
    return Pairing(pairs, errors, notes)


class Scored(NamedTuple):
    """One sample's outcome (sent between processes)."""
    scores: Optional[dict]  # {metric: value or None}, None when the sample failed
    error: Optional[str]  # why the sample could not be scored at all
    notices: list  # what score_pair said about it
    failures: dict  # {metric: why it failed on this sample}
    curves: Optional[dict] = None  # {metric: per-frame values} when asked for


class _SampleLog:
    """The notices and metric failures of one sample, logged as they come."""

    def __init__(self, name: str):
        self.name = name
        self.notices: list[str] = []
        self.failures: dict[str, str] = {}

    def notice(self, msg: str) -> None:
        self.notices.append(msg)
        log.info("%s: %s", self.name, msg)

    def failed(self, metric: str, why: str) -> None:
        self.failures[metric] = why
        log.error("%s: %s failed (%s)", self.name, metric, why)


def _score_one(name: str, pred: Path, gt: Optional[Path], built: dict, pair_options: dict,
               names: list, frame_bar) -> Scored:
    """Score one sample; an exception is its error, named in the log (the others go on).
    ``pair_options["curves"]`` True: the per-frame values are returned too."""
    slog = _SampleLog(name)
    opts = dict(pair_options)
    curves = {} if opts.pop("curves", False) else None
    try:
        scores = score_pair(pred, gt, built, notice=slog.notice, frame_bar=frame_bar,
                            failed=slog.failed, curves=curves, **opts)
        return Scored({k: scores[k] for k in names}, None, slog.notices, slog.failures, curves)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # reported by name; the other samples are still scored
        msg = f"{type(e).__name__}: {e}"
        log.error("%s: %s", name, msg)
        return Scored(None, msg, slog.notices, slog.failures)


def score_all(pairs: list, built: dict, names: list, pair_options: dict, progress: bool
              ) -> dict[str, Scored]:
    """{name: Scored} of every pair. Under several processes each scores its share (balanced
    by frames x pixels), then every process gets every outcome."""
    share = share_work(pairs, lambda pair: probe(pair[1]), pixel_frames, split="videos")
    scored: dict[str, Scored] = {}
    bar = progress_bar(share.alone, desc="samples", unit="video", leave=True, enabled=progress)
    fbar = progress_bar(total=0, desc="frames", unit="frame", position=1, enabled=progress)
    try:
        for name, pp, gp in bar:
            bar.set_postfix_str(name)
            scored[name] = _score_one(name, pp, gp, built, pair_options, names, fbar)
    finally:
        fbar.close()
        bar.close()
    for part in all_gather(scored):
        scored.update(part)
    return scored


@dataclass
class Results:
    """In the order of the pairs: {name: scores} of the samples with at least one metric that
    did not fail, {name: error or {metric: why}}, {name: notices}."""
    per_sample: dict[str, dict]
    errors: dict[str, object]
    notes: dict[str, list[str]]


def per_sample_results(pairs: list, scored: dict[str, Scored], names: list) -> Results:
    """Sort each pair's outcome into :class:`Results`."""
    per_sample, errors, notes = {}, {}, {}
    for name, _, _ in pairs:
        res = scored[name]
        if res.notices:
            notes[name] = list(res.notices)
        if res.error is not None:
            errors[name] = res.error
            continue
        if res.failures:
            errors[name] = dict(res.failures)
        if len(res.failures) < len(names):  # the metrics that did not fail are kept
            per_sample[name] = res.scores
    return Results(per_sample, errors, notes)


def average_scores(per_sample: dict, names: list) -> tuple[dict, list[str]]:
    """{metric: unweighted mean over the samples with a value, or None}, and a note for each
    metric some samples have no value of."""
    average, notes = {}, []
    for k in names:
        vals = [v[k] for v in per_sample.values() if v.get(k) is not None]
        average[k] = finite_or_none(float(np.mean(vals))) if vals else None
        if len(vals) != len(per_sample):
            notes.append(f"{k}: averaged over {len(vals)} of {len(per_sample)} samples "
                         "(others null)")
    return average, notes


def _pyiqa_version() -> Optional[str]:
    try:
        return getattr(pyiqa, "__version__", None)
    except Exception:
        return None


def _settings(gt, pred, out_dir: Path, opts: _Options, test_y_channel: bool, is_center: bool,
              batch_mode: bool, built: dict, seconds: float) -> dict:
    """The JSON's ``settings``: every option and convention the numbers depend on."""
    return {
        "gt": str(gt) if gt is not None else None,
        "pred": str(pred),
        "out": str(out_dir),
        "metrics": opts.names,
        "crop": opts.crop,
        "test_y_channel": bool(test_y_channel),
        "is_center": bool(is_center),
        "batch_mode": bool(batch_mode),
        "batch_size": opts.batch_size,
        "device": opts.device,
        "weights_dir": opts.weights_dir,
        "lower_better": {k: (True if k == EWARP else LOWER_BETTER[k] if k in LOWER_BETTER
                             else built[k].lower_better) for k in opts.names},
        "psnr_cap_db": PSNR_CAP_DB,
        "y_channel": f"Y = {Y_COEFFS[0]} R + {Y_COEFFS[1]} G + {Y_COEFFS[2]} B + "
                     f"{Y_OFFSET} on [0,1] RGB (psnr/ssim only)",
        "averaging": "per sample: mean over frames (ewarp: over frame pairs); "
                     "average: unweighted mean over samples",
        "pyiqa_version": _pyiqa_version(),
        "video_metrics_seed": DEFAULT_SEED,
        "seconds": round(seconds, 3),
    }


def _merge_notes(notes: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for name, msgs in more.items():
        notes.setdefault(name, []).extend(msgs)


def evaluate(pred: str | os.PathLike, gt: Optional[str | os.PathLike] = None,
             out: Optional[str | os.PathLike] = None,
             metrics: str | Sequence[str] = DEFAULT_METRICS, crop: int = 0,
             test_y_channel: bool = False, is_center: bool = False, batch_mode: bool = False,
             batch_size: int = 8, device: Optional[str] = None,
             weights_dir: Optional[str | os.PathLike] = None, write_json: bool = True,
             progress: bool = True, curves: bool = False) -> dict:
    """Score every sample and (with ``write_json``) write the JSON; returns its content.

    Raises :class:`EvalError` for setup problems (and
    :class:`Wan_SR.metrics.weights.MissingWeightsError` for absent weights). Per-sample and
    per-metric failures are reported by name, listed under ``errors`` and do not stop the
    others. ``gt`` / ``out`` given as '' mean none / the default (the published syntax). The
    ``out`` folder is created only when the JSON is written. With ``curves`` the result (and
    the JSON) holds ``per_frame``: {sample: {metric: [value per frame (pair)]}}."""
    gt, out = path_or_none(gt), path_or_none(out)
    opts = _checked_options(metrics, crop, batch_size, device, weights_dir)
    # 1. pairing
    pairing = pair_inputs(pred, gt)
    if not pairing.pairs and not pairing.errors:
        raise EvalError(f"nothing to score in --pred {pred}")
    pred_p = Path(pred)
    out_dir = Path(out) if out is not None else (pred_p if pred_p.is_dir() else pred_p.parent)
    # 2. the metrics (weights are checked here), 3. scoring, cut to the common size
    own_files = video_level_files(opts.names, opts.weights_dir)  # found before anything is built
    built = build_metrics(opts.names, gt is not None, opts.device, test_y_channel,
                          opts.weights_dir)
    extras = build_video_level(opts.names, opts.device, paths=own_files)
    batch = opts.batch_size if batch_mode else 1
    pair_options = dict(want_ewarp=EWARP in opts.names, crop=opts.crop, is_center=is_center,
                        batch=batch, device=opts.device,
                        chunk=max(batch, DEFAULT_CHUNK) if batch_mode else DEFAULT_CHUNK,
                        extras=extras, curves=curves)
    t0 = time.time()
    scored = score_all(pairing.pairs, built, opts.names, pair_options, progress)
    # 4. averaging
    samples = per_sample_results(pairing.pairs, scored, opts.names)
    errors = {**pairing.errors, **samples.errors}
    notes = pairing.notes
    _merge_notes(notes, samples.notes)
    average, average_notes = average_scores(samples.per_sample, opts.names)
    if average_notes:
        notes["_average"] = average_notes
    result = {"per_sample": samples.per_sample, "average": average,
              "count": len(samples.per_sample),
              "settings": _settings(gt, pred, out_dir, opts, test_y_channel, is_center,
                                    batch_mode, built, time.time() - t0),
              "notes": notes, "errors": errors}
    if curves:
        result["per_frame"] = {name: scored[name].curves for name, _, _ in pairing.pairs
                               if scored[name].curves is not None}
    # 5. writing
    if write_json and current().is_main:
        path = output_path(out_dir, opts.names)
        write_json_atomic(path, result)
        log.info("wrote %s", path)
    return result


def main(args) -> int:
    """Run from parsed ``eval_metrics.py`` arguments; returns the exit status
    (0 ok, 1 some samples failed, 2 nothing scored: bad arguments, missing weights, ...)."""
    return run(args)[0]


def run(args, pred=None, out=None, curves: bool = False) -> tuple[int, Optional[dict]]:
    """:func:`main` for ``pred`` / ``out`` (default: ``args.pred`` / ``args.out``); returns
    the exit status and the result (None when nothing was scored)."""
    try:
        res = evaluate(pred=args.pred if pred is None else pred, gt=args.gt,
                       out=args.out if out is None else out, metrics=args.metrics,
                       crop=args.crop, test_y_channel=args.test_y_channel,
                       is_center=args.is_center, batch_mode=args.batch_mode,
                       batch_size=args.batch_size, device=args.device,
                       weights_dir=args.weights_dir, curves=curves)
    except (EvalError, MissingWeightsError, VideoError, ValueError) as e:
        log.error("%s", e)
        return 2, None
    if not current().is_main:  # the main process prints and logs the result
        return (1 if res["errors"] else 0), res
    for k, v in res["average"].items():
        print(f"{k}: {v}")
    if res["errors"]:
        log.error("%d sample(s) failed: %s", len(res["errors"]), ", ".join(
            name if isinstance(why, str) else f"{name} ({', '.join(why)})"
            for name, why in res["errors"].items()))
        return 1, res
    return 0, res
