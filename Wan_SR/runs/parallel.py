"""How the folder loops share their inputs between processes (torchrun / accelerate launch;
docs/method.md, "Several processes"). One process keeps everything, in input order.

:func:`share_work` probes the inputs (each process a share, results exchanged), then decides
the same plan on every process: the inputs restored by all processes together (split by
windows) and, of the others, the ones this process restores whole (balanced by frames x
pixels). :func:`finish` gathers every process's :class:`~Wan_SR.runs.common.Summary` and logs
one summary on the main process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from Wan_SR.core.distributed import (Ranks, all_gather, assign_by_cost, current,
                                     split_by_windows)
from .common import Summary

log = logging.getLogger(__name__)


@dataclass
class Share:
    """This process's share of the inputs (keys in input order)."""
    together: list            # restored by every process, split by windows
    alone: list               # restored whole by this process
    probe: Callable           # key -> probe result
    probed: dict = field(default_factory=dict)   # key -> probe result or the error it raised

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
