"""Per-video PNG curves of ``eval_metrics.py --plots``: one figure per video, one panel per
metric with per-frame values (the pyiqa metrics per frame, ``ewarp`` / ``ewarp_raft`` per pair of
consecutive frames, drawn between the two frames), one line per method. When a method's folder
(or one of its two parents) holds step 1's ``run_config.json`` with pixel windows, its temporal
windows are marked: a dashed line where each window after the first starts and its overlap with
the previous one shaded (:func:`Wan_SR.core.windows.window_starts`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from Wan_SR.core.files import atomic_path  # noqa: E402
from Wan_SR.core.windows import window_starts  # noqa: E402
from .common import read_run_config  # noqa: E402

WIDTH_PX, PANEL_PX, DPI = 1000, 260, 100
PAIR_METRICS = ("ewarp", "ewarp_raft")


def temporal_windows(pred: Path) -> Optional[tuple[int, int]]:
    """(window_t, overlap_t) of the step-1 run whose outputs are in ``pred`` (a folder or a
    file), from the first ``run_config.json`` in its folder or the two above; None when there
    is none or its windows are not pixel windows."""
    folder = pred if pred.is_dir() else pred.parent
    for d in (folder, folder.parent, folder.parent.parent):
        cfg = read_run_config(d)
        if not cfg:
            continue
        settings = cfg.get("settings", cfg)
        win = settings.get("windows") if isinstance(settings, dict) else None
        if not isinstance(win, dict) or "window_t" not in win:
            continue
        if settings.get("window_space", "pixel") != "pixel":
            return None
        return int(win["window_t"]), int(win.get("overlap_t", 0))
    return None


def seams(n: int, windows: Optional[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) frame ranges shared by consecutive windows of a clip of ``n`` frames."""
    if windows is None or n <= windows[0]:
        return []
    window, overlap = windows
    return [(s, s + overlap) for s in window_starts(n, window, overlap)[1:]]


def _frames(curves: dict) -> int:
    n = 0
    for k, v in curves.items():
        n = max(n, len(v) + (1 if k in PAIR_METRICS else 0))
    return n


def plot_video(path: Path, sample: str, methods: dict, windows: dict) -> Optional[Path]:
    """One PNG for ``sample``: ``methods`` {method: {metric: [values]}}, ``windows``
    {method: (window_t, overlap_t) or None}. Width :data:`WIDTH_PX`, :data:`PANEL_PX` per
    panel. None when no method has a curve."""
    metrics = []
    for curves in methods.values():
        metrics += [m for m, v in curves.items() if v and m not in metrics]
    if not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), 1, squeeze=False, sharex=True,
                             figsize=(WIDTH_PX / DPI, PANEL_PX * len(metrics) / DPI), dpi=DPI)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[:, 0], metrics):
        for i, (method, curves) in enumerate(methods.items()):
            c = colours[i % len(colours)]
            values = curves.get(metric) or []
            x0 = 0.5 if metric in PAIR_METRICS else 0.0
            xs = [x0 + t for t, v in enumerate(values) if v is not None and math.isfinite(v)]
            ys = [v for v in values if v is not None and math.isfinite(v)]
            ax.plot(xs, ys, color=c, lw=1.2, label=method)
            for a, b in seams(_frames(curves), windows.get(method)):
                ax.axvspan(a, b - 1, color=c, alpha=0.08)
                ax.axvline(a, color=c, lw=0.8, ls="--")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(sample)
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def plot_all(out_dir: Path, per_frame: dict, preds: dict) -> list[Path]:
    """Plots of every video: ``per_frame`` {method: {sample: {metric: [values]}}}, ``preds``
    {method: its --pred path}; written to ``out_dir/<sample>.png``."""
    samples = []
    for by_sample in per_frame.values():
        samples += [s for s in by_sample if s not in samples]
    windows = {m: temporal_windows(Path(p)) for m, p in preds.items()}
    written = []
    for s in samples:
        methods = {m: per_frame[m][s] for m in per_frame if s in per_frame[m]}
        p = plot_video(out_dir / f"{s}.png", s, methods, windows)
        if p is not None:
            written.append(p)
    return written
