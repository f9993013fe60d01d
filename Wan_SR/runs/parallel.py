"""How the folder loops share their inputs between processes (torchrun / accelerate launch;
docs/method.md, "Several processes"). One process keeps everything, in input order.

:func:`share_work` probes the inputs (each process a share, results exchanged), then decides
the same plan on every process: the inputs restored by all processes together (split by
windows) and, of the others, the ones this process restores whole (balanced by frames x
pixels). :func:`deliver` hands one video's chunks from its source to its sink, made by this
process alone or in parts by all of them. :func:`finish` gathers every process's
:class:`~Wan_SR.runs.common.Summary` and logs one summary on the main process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from Wan_SR.core.distributed import (Ranks, all_gather, assign_by_cost, current,
                                     items_per_part, on_main, ordered_parts, split_by_windows)
from Wan_SR.core.windows import split_parts
from .common import Summary

log = logging.getLogger(__name__)


@dataclass
class Share:
    """This process's share of the inputs (keys in input order)."""
    together: list            # restored by every process, split by windows
    alone: list               # restored whole by this process
    probe: Callable           # key -> probe result
    probed: dict = field(default_factory=dict)   # key -> probe result or the error it raised

    def jobs(self) -> list:
        """``(key, together)`` of every input this process works on: first those every
        process restores together, then its own."""
        return [(k, True) for k in self.together] + [(k, False) for k in self.alone]

    def info(self, key):
        """The probe result of ``key``; raises the error probing it raised."""
        if key not in self.probed:  # one process: probed when its turn comes
            self.probed[key] = _try(self.probe, key)
        got = self.probed[key]
        if isinstance(got, Exception):
            raise got
        return got


def share_work(keys: Sequence[Hashable], probe: Callable, cost: Callable,
               split: str = "auto", can_split: bool = True) -> Share:
    """Every process gets the same plan. ``probe(key)`` -> info (errors are kept and raised by
    :meth:`Share.info` on the process that handles the key); ``cost(info)`` -> frames x pixels.
    ``can_split=False``: no input is split by windows (a logged note when one would be).
    One process: nothing is probed ahead, every key is ``alone``. Waits for every process (so
    what the main process did before, e.g. removing stale files, is done for all)."""
    keys = list(keys)
    r = current()
    if not r.several:
        return Share([], keys, probe)
    mine = {k: _try(probe, k) for i, k in enumerate(keys) if i % r.size == r.rank}
    probed = {}
    for part in all_gather(mine):
        probed.update(part)
    costs = {k: cost(v) for k, v in probed.items() if not isinstance(v, Exception)}
    together = split_by_windows(costs, r.size, split)
    if together and not can_split:
        log.info("--window_space latent: videos are not split by windows; each goes whole to "
                 "one process")
        together = set()
    rest = {k: costs.get(k, 0) for k in keys if k not in together}
    owner = assign_by_cost(rest, r.size)
    share = Share([k for k in keys if k in together],
                  [k for k in keys if owner.get(k) == r.rank], probe, probed)
    _log_plan(r, keys, together, owner, rest)
    return share


def deliver(source, sink, together: bool = False) -> None:
    """Every chunk of ``source`` (``num_parts``, ``chunks(part, note)``) rendered by ``sink``
    (``render``, ``write``, ``note``) and written in frame order. ``together``: part ``i`` is
    made and rendered by process ``i % size`` and written by the main process
    (:func:`Wan_SR.core.distributed.ordered_parts`); a failure anywhere raises on every
    process."""
    def produce(part):
        return map(sink.render, source.chunks(part, sink.note))

    if together:
        ordered_parts(source.num_parts, produce, sink.write)
        return
    for part in range(source.num_parts):
        for frames in produce(part):
            sink.write(frames)


def window_parts(num_windows: int, num_frames: int, frame_bytes: int,
                 split: bool) -> list[tuple[int, int]]:
    """The windows of one video as parts ``(first, end)``: with ``split``, contiguous parts
    for every process (:func:`Wan_SR.core.windows.split_parts`), each holding about
    :data:`Wan_SR.core.distributed.PART_BYTES` of output frames (``frame_bytes`` a frame);
    else one part."""
    if not split:
        return [(0, num_windows)]
    return split_parts(num_windows, current().size,
                       items_per_part(max(1, num_frames // num_windows), frame_bytes))


def decided(fn: Callable, together: bool):
    """``fn()``; for an input every process works on, decided by the main process and its
    result handed to every process (an error there is raised on every process)."""
    return on_main(fn, share=True) if together else fn()


def reporter(summary: Summary, together: bool) -> Summary:
    """Where one input is reported: ``summary``, but for an input every process works on only
    on the main process (the others report to a quiet summary of their own)."""
    if together and not current().is_main:
        return Summary(summary.what, quiet=True)
    return summary


def pixel_frames(info) -> int:
    """The work of one video: frames x pixels."""
    return info.num_frames * info.width * info.height


def _try(fn, key):
    try:
        return fn(key)
    except Exception as e:  # kept, raised where the key is handled
        return e


def _log_plan(r: Ranks, keys, together, owner, costs) -> None:
    if together:
        log.info("%d of %d input(s) split by windows over %d processes", len(together),
                 len(keys), r.size)
    loads = [0] * r.size
    counts = [0] * r.size
    for k, rank in owner.items():
        loads[rank] += costs[k]
        counts[rank] += 1
    if owner:
        log.info("whole inputs per process: %s", ", ".join(
            f"{i}: {counts[i]} ({loads[i] / 1e6:.1f} Mpixel-frames)" for i in range(r.size)))


def finish(summary: Summary, wall: float) -> int:
    """Log one summary (the main process, with every process's counts and speed) and return the
    exit status, the same on every process. ``wall``: seconds this process worked."""
    parts = all_gather((summary, wall))
    if len(parts) == 1:
        return summary.log()
    merged = Summary(summary.what)
    for s, _ in parts:
        merged.merge(s)
    status = merged.log()
    for rank, (s, secs) in enumerate(parts):
        log.info("process %d: %d done, %d skipped, %d failed; %s", rank, len(s.done),
                 len(s.skipped), len(s.failed), s.speed())
    longest = max(secs for _, secs in parts)
    log.info("all %d processes: %d frames in %.1f s (%.2f frames/s)", len(parts), merged.frames,
             longest, merged.frames / longest if longest > 0 else 0.0)
    return status
