"""Where a run's time goes (``inference_step_1.py --profile FILE``): a timeline per window of the
main thread's phases and of the GPU's work, from one trace of torch's profiler.

The code marks its phases with :func:`span` (a ``torch.profiler.record_function`` named
``pssr/<phase>``: a few microseconds when no profile is taken) and the start of every window
and clip with :func:`mark`. :func:`profiled` takes the trace (CPU, and CUDA kernels and copies
on a GPU) and writes FILE: per window, its wall time, the GPU's busy time in it (the union of
its kernels, and of kernels and copies), and the main thread's seconds in each phase; per clip
and for the steady state (every window but the first clip's) the same summed, with
``gpu_busy`` = kernel time / wall time. Profiling itself slows the run a little (each operator
is recorded): its speed is the speed of a profiled run."""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)
PREFIX = "pssr/"
WINDOW, CLIP = "window", "clip"


def span(phase: str):
    """A context manager marking ``phase`` in a profile (no cost worth naming without one)."""
    return torch.profiler.record_function(PREFIX + phase)


def mark(kind: str, name: str = "") -> None:
    """The start of a window or a clip (``kind`` :data:`WINDOW` or :data:`CLIP`) in a profile."""
    with torch.profiler.record_function(f"{PREFIX}{kind}:{name}"):
        pass


@contextmanager
def profiled(path: Optional[str], device):
    """Profile the body into ``path`` (JSON, see the module docstring); ``path`` None: nothing."""
    if not path:
        yield
        return
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        yield
    timeline = summarize(trace_events(prof))
    tmp = Path(str(path) + ".partial")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(timeline, indent=1))
    tmp.replace(path)
    s = timeline["steady"]
    top = sorted(s["main_s"].items(), key=lambda kv: -kv[1])[:6]
    log.info("profile -> %s: steady state %.1f s, GPU busy %.0f%% (kernels), main thread: %s",
             path, s["wall_s"], 100 * s["gpu_busy"], ", ".join(f"{k} {v:.2f} s" for k, v in top))


def trace_events(prof) -> dict:
    """The trace as plain intervals in seconds from its start: ``marks`` [(kind, name, t)],
    ``spans`` [(phase, t0, t1)] of the main thread, ``kernels`` and ``copies`` [(t0, t1)]."""
    events = prof.profiler.kineto_results.events()
    t_zero = min((e.start_ns() for e in events), default=0)
    main_thread = None
    marks, spans, kernels, copies = [], [], [], []
    for e in events:
        name = e.name()
        t0, t1 = (e.start_ns() - t_zero) / 1e9, (e.end_ns() - t_zero) / 1e9
        if e.device_type() == torch.autograd.DeviceType.CUDA:
            (copies if name.startswith(("Memcpy", "Memset")) else kernels).append((t0, t1))
        elif name.startswith(PREFIX):
            kind, _, label = name[len(PREFIX):].partition(":")
            if kind in (WINDOW, CLIP):
                main_thread = e.start_thread_id() if main_thread is None else main_thread
                marks.append((kind, label, t0))
            else:
                spans.append((kind, t0, t1, e.start_thread_id()))
    spans = [(k, a, b) for k, a, b, tid in spans if main_thread is None or tid == main_thread]
    end = max([t for _, _, t in spans] + [t for _, t in kernels] + [t for *_, t in marks] + [0])
    return {"marks": sorted(marks, key=lambda m: m[2]), "spans": spans, "kernels": kernels,
            "copies": copies, "end": end}


def busy(intervals: list, a: float, b: float) -> float:
    """Seconds of [a, b) covered by the union of ``intervals`` [(t0, t1)]."""
    total, reach = 0.0, a
    for t0, t1 in sorted((max(t0, a), min(t1, b)) for t0, t1 in intervals if t1 > a and t0 < b):
        if t1 > reach:
            total += t1 - max(t0, reach)
            reach = t1
    return total


def own_time(spans: list, a: float, b: float) -> dict:
    """Seconds of [a, b) the main thread spent in each phase, a nested phase counted once (the
    innermost)."""
    inside = sorted(((k, max(t0, a), min(t1, b)) for k, t0, t1 in spans if t1 > a and t0 < b),
                    key=lambda s: (s[1], -s[2]))
    out: dict = {}
    stack: list = []  # [phase, end, seconds in nested phases, start]

    def pop_until(t):
        while stack and stack[-1][1] <= t:
            k, t1, child, t0 = stack.pop()
            out[k] = out.get(k, 0.0) + (t1 - t0) - child
            if stack:
                stack[-1][2] += t1 - t0
    for k, t0, t1 in inside:
        pop_until(t0)
        stack.append([k, t1, 0.0, t0])
    pop_until(float("inf"))
    return out


def summarize(tr: dict) -> dict:
    """Per window, per clip and steady-state sums (module docstring)."""
    marks, end = tr["marks"], tr["end"]
    windows, clip = [], None
    starts = [(k, n, t) for k, n, t in marks]
    for i, (kind, name, t) in enumerate(starts):
        if kind == CLIP:  # the clip's set-up until its first window: a row of its own
            clip, name = name, "(set-up)"
        nxt = next((t2 for _, _, t2 in starts[i + 1:]), end)
        windows.append(_row(tr, t, nxt, clip=clip, window=name))
    clips: dict = {}
    for w in windows:
        clips.setdefault(w["clip"], []).append(w)
    first = next(iter(clips), None)
    steady = [w for w in windows if w["clip"] != first] or windows
    return {"windows": windows,
            "clips": {c: _total(ws) for c, ws in clips.items()},
            "steady": dict(_total(steady), clips=[c for c in clips if c != first] or [first]),
            "note": "seconds; a window's row lasts until the next mark (its chunks' conversion "
                    "and writing included; a clip's last row: its writers' close); gpu_busy = "
                    "union of kernel time / wall time; main_s: the main thread's own time in "
                    "each phase (launches are asynchronous: a long phase is a wait); steady: "
                    "every window but the first clip's"}


def _row(tr: dict, a: float, b: float, **keys) -> dict:
    kern = busy(tr["kernels"], a, b)
    main = own_time(tr["spans"], a, b)
    main["(other)"] = max(0.0, (b - a) - sum(main.values()))  # Python between the phases
    return dict(keys, start_s=round(a, 4), wall_s=b - a, kernels_s=kern,
                gpu_any_s=busy(tr["kernels"] + tr["copies"], a, b),
                gpu_busy=kern / (b - a) if b > a else 0.0, main_s=main)


def _total(rows: list) -> dict:
    wall = sum(r["wall_s"] for r in rows)
    kern = sum(r["kernels_s"] for r in rows)
    main: dict = {}
    for r in rows:
        for k, v in r["main_s"].items():
            main[k] = main.get(k, 0.0) + v
    return {"windows": len(rows), "wall_s": wall, "kernels_s": kern,
            "gpu_any_s": sum(r["gpu_any_s"] for r in rows),
            "gpu_busy": kern / wall if wall else 0.0, "main_s": main}


def idle(tr: dict, a: float, b: float, top: int = 8) -> dict:
    """The GPU's idle time in [a, b) of a trace (:func:`trace_events`) whose ``window`` marks
    end the main thread's phases (a mark named X at t: phase X ran until t): ``gpu_busy`` (kernel
    time / wall time), the idle seconds per phase the main thread was in when the GPU ran out
    of work, and the ``top`` longest gaps."""
    ends = [(t, name) for kind, name, t in tr["marks"] if kind == WINDOW and a <= t <= b]
    gaps, reach = [], a
    for t0, t1 in sorted(iv for iv in tr["kernels"] if iv[1] > a and iv[0] < b):
        if t0 > reach:
            gaps.append((reach, min(t0, b)))
        reach = max(reach, t1)
    if reach < b:
        gaps.append((reach, b))

    def phase(t):
        return next((name for te, name in ends if te > t), "(after the last phase)")
    per_phase: dict = {}
    for g0, g1 in gaps:
        per_phase[phase(g0)] = per_phase.get(phase(g0), 0.0) + (g1 - g0)
    longest = sorted(gaps, key=lambda g: g[0] - g[1])[:top]
    wall, idle_s = b - a, sum(g1 - g0 for g0, g1 in gaps)
    return {"wall_s": wall, "kernels_s": wall - idle_s,
            "gpu_busy": (wall - idle_s) / wall if wall > 0 else 0.0,
            "idle_s": idle_s, "gaps": len(gaps),
            "idle_s_by_phase": per_phase,
            "longest_gaps": [{"at_s": round(g0 - a, 4), "seconds": g1 - g0, "phase": phase(g0)}
                             for g0, g1 in longest]}
