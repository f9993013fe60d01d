"""How many DiT blocks each trained network recomputes in its backward (``--gradient_checkpointing``,
docs/method.md §9, "Memory and speed").

Recomputing a block's activations in the backward (gradient checkpointing) saves its memory and
costs one more forward of the block. ``auto`` recomputes as few blocks as fit the memory target:
the first step recomputes every block but the last of each trained DiT, measuring the bytes
that block saved for its backward (:class:`Wan_SR.models.dit.SavedBytes`) and the step's peak;
from the second step on each DiT keeps as many more blocks as the room left under the target
holds (:meth:`Recompute.settle`). The trained DiTs run one after the other (each one's graph is
freed by its backward before the next forward), so each gets the whole room. On the CPU, and
until the settings are measured, ``auto`` is ``full``. The values computed do not depend on the
setting (recomputation repeats the same operations).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.distributed as dist

from Wan_SR.models.dit import Checkpointing
from .options import checkpointing_setting

log = logging.getLogger(__name__)

GIB = 2 ** 30
AUTO_MARGIN_GIB = 4.0  # of the GPU's memory, left to the CUDA context, NCCL and fragmentation
SAFETY = 1.15  # a kept block's saved bytes, raised for the allocator's rounding
NAMES = ("base", "draft", "regulariser")  # the trained DiTs, as the trainers name them


class Recompute:
    """The recomputation of each trained DiT, by name (``"base"``, ``"regulariser"``,
    ``"draft"``): :meth:`policy` for its forward; :meth:`settle` after the first step."""

    def __init__(self, setting, target_gib: float, device: torch.device):
        self.setting = checkpointing_setting(setting)
        self.device = torch.device(device)
        self.auto = self.setting == "auto" and self.device.type == "cuda"
        self.target_gib = target_gib
        self.measured: dict[str, list] = {}   # name -> saved bytes of its kept blocks (1st step)
        self.keep: Optional[dict[str, int]] = None  # name -> blocks kept, once settled
        if self.setting == "auto" and not self.auto:
            log.info("--gradient_checkpointing auto on the CPU: every block recomputed")

    def policy(self, name: str, blocks: int) -> Checkpointing:
        """The :class:`Checkpointing` of DiT ``name`` of ``blocks`` blocks."""
        assert name in NAMES, name
        s = self.setting
        if s == "none":
            return Checkpointing(0)
        if isinstance(s, int):
            return Checkpointing(min(s, blocks))
        if not self.auto:
            return Checkpointing(None)
        if self.keep is None:  # the first step: keep the last block and measure it
            return Checkpointing(blocks - 1, self.measured.setdefault(name, []))
        return Checkpointing(max(0, blocks - self.keep.get(name, 1)))

    def target(self) -> float:
        """The memory target in GiB: given (at most the GPU's memory), else the GPU's memory
        less a margin."""
        index = self.device.index if self.device.index is not None else \
            torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory / GIB
        if self.target_gib and self.target_gib > total:
            log.warning("--memory_target %g GiB: the GPU has %.1f GiB; using that less %g",
                        self.target_gib, total, AUTO_MARGIN_GIB)
            self.target_gib = 0.0
        return self.target_gib or total - AUTO_MARGIN_GIB

    def settle(self) -> None:
        """After the first step (``auto`` only): keep per DiT as many blocks as the room between
        the step's peak and the target holds, the fewest any process can keep (every process
        calls this after its first step); logged in one line."""
        if not self.auto or self.keep is not None:
            return
        peak = torch.cuda.max_memory_reserved(self.device) / GIB
        self.keep = agree(keep_blocks(self.target() - peak, self.measured), self.device)
        parts = [f"{name} keeps {self.keep[name]} block(s) ({max(saved) / GIB:.2f} GiB each)"
                 for name, saved in self.measured.items() if saved]
        log.info("gradient checkpointing auto: target %.1f GiB, first step's peak %.1f GiB; %s",
                 self.target(), peak, "; ".join(parts) or "no trained DiT ran")


def agree(keep: dict, device) -> dict:
    """``keep`` with each count the smallest over the processes (a collective when several
    run), so that they all compute alike; a DiT that ran on some processes only in the first
    step (e.g. the regulariser beside single-frame clips) takes the others' count."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return keep
    unknown = 2 ** 62
    counts = torch.tensor([keep.get(n, unknown) for n in NAMES], dtype=torch.int64,
                          device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.MIN)
    return {n: c for n, c in zip(NAMES, counts.tolist()) if c != unknown}


def keep_blocks(room_gib: float, measured: dict) -> dict:
    """Blocks kept per DiT: the measured one and as many more as ``room_gib`` holds (each DiT
    has the whole room: they run one after the other)."""
    keep = {}
    for name, saved in measured.items():
        if saved:
            per_block = SAFETY * max(saved) / GIB
            keep[name] = 1 + max(0, math.floor(room_gib / per_block))
    return keep


FULL = Recompute("full", 0.0, "cpu")  # every block recomputed (the modules' default)
