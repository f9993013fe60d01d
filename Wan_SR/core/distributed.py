"""Several processes, one device each, started by ``torchrun`` or ``accelerate launch``
(docs/method.md, "Several processes").

The launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in every process. :func:`init` joins the process group when ``WORLD_SIZE`` > 1; without those
variables nothing changes: one process, no process group. The device of a process is chosen
by :func:`Wan_SR.core.devices.resolve_device` (``cuda:LOCAL_RANK``).

The loops need three things from here:

- planning (pure functions): :func:`assign_by_cost` balances whole videos over the processes,
  :func:`split_by_windows` says which videos every process restores together;
- :func:`all_gather` of small Python objects (probe results, summaries, scores) through the
  launcher's key-value store. It waits without a time limit, so a process that finished its
  videos early waits for the slowest one however long that takes;
- :func:`ordered_parts`: one result (the frames of one video) made in parts by all processes
  and handed in order to the main process, the one that writes it.

:class:`Watchdog` turns a hang (a collective that some process never joins) into an error that
names the work and the process (the trainers' ``--collective_timeout``).

The process group uses gloo, also on GPUs: every message is a small object or uint8 frames that
are on the host anyway (the writers need them there). Its time limit (``PSSR_DIST_TIMEOUT``
seconds, default 2 hours) is a last resort: a failure is reported to every process instead
(:func:`ordered_parts`), and a process that dies makes the launcher stop the others.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import pickle
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from .devices import resolve_device

log = logging.getLogger(__name__)

TIMEOUT_ENV = "PSSR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 2 * 3600
SPLITS = ("auto", "videos", "windows")
# Frames a process holds of its part of a split video until the main process takes them.
PART_BYTES = 4 << 30


@dataclass(frozen=True)
class Ranks:
    """This process among the others: ``rank`` of ``size``, ``local_rank`` on its machine."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.size > 1


def env_ranks() -> Ranks:
    """What the launcher's variables say (a single process when ``WORLD_SIZE`` is unset or 1)."""
    size = int(os.environ.get("WORLD_SIZE") or 1)
    if size <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK") or 0), size, int(os.environ.get("LOCAL_RANK") or 0))


def current() -> Ranks:
    """The processes this one works with: those of the process group, else itself alone."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), env_ranks().local_rank)
    return Ranks()


def init() -> Ranks:
    """Join the process group when the launcher started several processes (once; ``atexit``
    leaves it). The GPU of this process becomes the current CUDA device."""
    r = env_ranks()
    if not r.several or dist.is_initialized():
        return current()

    dev = resolve_device(None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))
    dist.init_process_group("gloo", timeout=timeout, rank=r.rank, world_size=r.size)
    atexit.register(_leave)
    log.info("%d processes, one device each (this one: %s)", r.size, dev)
    return current()


def exit_status(status: int) -> int:
    """A script's exit status: the main process's one reports the whole run (its summary counts
    every process's failures); the others end with 0, so the launcher names the main process
    and stops nothing early."""
    return status if current().is_main else 0


def _leave() -> None:
    """Leave the process group at exit. The main process leaves last (it waits up to 10 s for
    the others), so the launcher never stops a process that is still shutting down."""
    if not dist.is_initialized():
        return
    r, store = current(), _store()
    dist.destroy_process_group()
    if not r.is_main:
        store.set(f"pssr/left/{r.rank}", b"1")
        return
    keys = [f"pssr/left/{i}" for i in range(1, r.size)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not store.check(keys):
        time.sleep(0.05)
    time.sleep(0.5)  # their interpreters finish exiting


# ------------------------------------------------------------------ planning (pure)

def assign_by_cost(costs: dict, size: int) -> dict:
    """{item: rank}: the items by cost, largest first (ties by name), each to the process with
    the least work so far (ties: the lowest rank). The same on every process."""
    load = [0] * size
    owner = {}
    for key in sorted(costs, key=lambda k: (-costs[k], str(k))):
        r = min(range(size), key=lambda i: (load[i], i))
        owner[key] = r
        load[r] += costs[key]
    return owner


def split_by_windows(costs: dict, size: int, split: str = "auto") -> set:
    """The items every process restores together, split by windows; the others go whole to one
    process. ``windows``: all; ``videos``: none; ``auto``: an item larger than an equal share of
    the whole (total cost / size), and all of them when fewer than ``size`` items would be left
    to share out (fewer videos than processes: nobody waits idle)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if size <= 1 or split == "videos":
        return set()
    if split == "windows":
        return set(costs)
    total = sum(costs.values())
    big = {k for k, c in costs.items() if c * size > total}
    return set(costs) if len(costs) - len(big) < size else big


def items_per_part(frames_per_item: int, bytes_per_frame: int) -> int:
    """How many windows of ``frames_per_item`` new frames fit in :data:`PART_BYTES`."""
    return max(1, PART_BYTES // max(1, frames_per_item * bytes_per_frame))


# ------------------------------------------------------------------ small objects

_SEQ = itertools.count()


def _store():
    return dist.distributed_c10d._get_default_store()


def all_gather(obj) -> list:
    """``obj`` of every process, in rank order, on every process (``[obj]`` for one process).

    Through the launcher's key-value store, polled, so waiting has no time limit. Every process
    must call it the same number of times in the same order."""
    r = current()
    if not r.several:
        return [obj]
    store = _store()
    prefix = f"pssr/{next(_SEQ)}/"
    store.set(prefix + str(r.rank), pickle.dumps(obj))
    keys = [prefix + str(i) for i in range(r.size)]
    delay = 0.01
    while not store.check(keys):
        time.sleep(delay)
        delay = min(2 * delay, 1.0)
    return [pickle.loads(store.get(k)) for k in keys]


def on_main(fn: Callable, share: bool = False):
    """Run ``fn()`` on the main process only. If it raises, every process raises that error;
    otherwise the main process returns its result, the others ``None`` (or the same result with
    ``share``)."""
    r = current()
    if not r.several:
        return fn()
    result, error = None, None
    if r.is_main:
        try:
            result = fn()
        except Exception as e:  # handed to every process below
            error = e
    sent = all_gather((_picklable(error), result if share else None) if r.is_main else None)[0]
    if sent[0] is not None:
        raise error if error is not None else sent[0]
    return result if r.is_main else sent[1]


def _picklable(e: Optional[Exception]) -> Optional[Exception]:
    if e is None:
        return None
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(str(e))


# ------------------------------------------------------------------ one result in parts

class PartFailed(RuntimeError):
    """A part of a result shared by all processes failed (the message says where and why)."""


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every process (a collective: every process calls it)."""
    if not current().several:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def ordered_parts(n_parts: int, produce: Callable[[int], Iterable[dict]],
                  consume: Callable[[dict], None],
                  on_part: Optional[Callable[[int], None]] = None) -> None:
    """Make parts ``0..n_parts-1`` of one result, part ``i`` on process ``i % size``, and hand
    their items to ``consume`` on the main process, in order.

    ``produce(i)`` yields the items of part ``i``: dicts of numpy arrays (uint8 frames per
    output). The parts go in rounds: in round ``m`` every process makes part ``m * size + rank``;
    the main process consumes its own part as it is made, then receives the others' in rank
    order. Another process holds its part until the main process takes it (so a part is sized
    to :data:`PART_BYTES`), then starts its next one.

    Failure: an exception while producing (a broken frame, out of memory) or consuming (the
    writer) is sent to the main process and stops every process before the next round; every
    process then raises :class:`PartFailed` (on the main process with the first reason and the
    process it came from). Nothing waits on a process that failed."""
    r = current()
    if not r.several:
        for i in range(n_parts):
            for item in produce(i):
                consume(item)
            if on_part:
                on_part(i)
        return
    error: Optional[str] = None
    for first in range(0, n_parts, r.size):
        if not all_true(error is None):
            break
        if r.is_main:
            error = _main_round(first, min(first + r.size, n_parts), produce, consume, on_part)
        elif first + r.rank < n_parts:
            error = _send_part(produce, first + r.rank)
    if not all_true(error is None):
        raise PartFailed(error or "stopped: a part failed on another process")


def _describe(e: BaseException, rank: int) -> str:
    log.debug("process %d failed", rank, exc_info=e)
    return f"process {rank}: {e}"


def _main_round(first: int, end: int, produce, consume, on_part) -> Optional[str]:
    """The main process's share of one round: its own part, then every other one received in
    order (always read to the end, so no sender waits; after an error items are dropped)."""
    error = None
    try:
        for item in produce(first):
            consume(item)
    except Exception as e:
        error = _describe(e, 0)
    if error is None and on_part:
        on_part(first)
    for i in range(first + 1, end):
        for item in _receive(i - first):
            if isinstance(item, str):
                error = error or item
            elif error is None:
                try:
                    consume(item)
                except Exception as e:
                    error = _describe(e, 0)
        if error is None and on_part:
            on_part(i)
    return error


def _send_part(produce, i: int) -> Optional[str]:
    """Make part ``i`` whole, then send it to the main process (items, then an end mark) or,
    if making it failed, the reason."""
    rank = current().rank
    try:
        items = list(produce(i))
    except Exception as e:
        error = _describe(e, rank)
        dist.send_object_list([("error", error)], dst=0)
        return error
    for item in items:
        dist.send_object_list([("item", [(k, a.shape, a.dtype.str) for k, a in item.items()])],
                              dst=0)
        for a in item.values():
            if a.size:
                dist.send(torch.from_numpy(np.ascontiguousarray(a)), dst=0)
    dist.send_object_list([("end", None)], dst=0)
    return None


def _receive(src: int) -> Iterator:
    """The items of one part from process ``src``; a str is the reason it failed."""
    while True:
        box = [None]
        dist.recv_object_list(box, src=src)
        kind, body = box[0]
        if kind == "end":
            return
        if kind == "error":
            yield body
            return
        item = {}
        for key, shape, dtype in body:
            a = np.empty(shape, np.dtype(dtype))
            if a.size:
                dist.recv(torch.from_numpy(a), src=src)
            item[key] = a
        yield item


# ------------------------------------------------------------------ hangs

class Watchdog:
    """``with dog.watch("step 12", seconds):`` around work that must end within ``seconds`` (a
    training step, whose collectives wait for every process). If it does not, the process writes
    one line naming the work and the process to standard error and exits with status 3, so the
    launcher (torchrun, accelerate launch) stops the others: an error instead of a silent hang
    of every process (a process that waits in a collective cannot be interrupted otherwise)."""

    EXIT_STATUS = 3

    def __init__(self, option: str = "--collective_timeout"):
        self.option = option

    @contextlib.contextmanager
    def watch(self, what: str, seconds: float):
        timer = threading.Timer(float(seconds), self._fire, args=(what, seconds))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _fire(self, what: str, seconds: float) -> None:
        r = env_ranks()
        sys.stderr.write(f"ERROR {what}, process {r.rank} of {r.size}: not done after {seconds:g} s "
                         f"({self.option}): another process failed or stopped, or a collective "
                         "hangs; stopping\n")
        sys.stderr.flush()
        os._exit(self.EXIT_STATUS)
