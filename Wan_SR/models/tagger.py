"""Prompt tags (docs/method.md, "Prompt"): the RAM Swin-L tagger (optionally with DAPE weights)
names what one frame of the clip shows, and the prompt becomes ``"<prompt>, <tags>"``.

Shared by step 1 (one LQ frame per clip, RAM + DAPE as published: :class:`ClipPrompts`) and
both trainers (one HQ frame per sample, RAM alone as published; ``--tag_source lq`` tags the
degraded frame). The frame is chosen by a seeded draw, the tags come in vocabulary order, and a
frame with no tag leaves the prompt alone (no trailing ``", "``).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from . import ram
from .offload import HostCopy
from .wan import DAPE_SOURCE, RAM_SOURCE

log = logging.getLogger(__name__)


def prompt_with_tags(prompt: str, tags: Optional[str]) -> str:
    return f"{prompt}, {tags}" if tags else prompt


def pick_frame(num_frames: int, generator: Optional[torch.Generator] = None,
               seed: Optional[int] = None) -> int:
    """The frame to tag: a uniform draw in ``[0, num_frames)`` from ``generator`` (or a fresh one
    seeded with ``seed``), as the release's ``torch.randint(0, T)`` but reproducible."""
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed or 0))
    return int(torch.randint(0, int(num_frames), (1,), generator=generator).item())


def will_tag(ram_path, enabled: bool = True) -> bool:
    """Whether :func:`load_tagger` will return a tagger (tags on and the RAM file there)."""
    return bool(enabled and ram_path and Path(ram_path).exists())


def load_tagger(ram_path, dape_path=None, *, enabled: bool = True, device="cpu",
                dtype=torch.float32, offload: bool = False) -> Optional["Tagger"]:
    """The tagger, or None (said once) when tags are off or the RAM file is absent. A missing
    DAPE file tags with RAM alone (said once)."""
    if not enabled:
        log.info("tags off (--no_tags): the prompt is used alone")
        return None
    if not ram_path or not Path(ram_path).exists():
        log.info("RAM tagger weights not found (%s; get ram_swin_large_14m.pth from %s): using "
                 "the prompt alone", ram_path, RAM_SOURCE)
        return None
    if dape_path and not Path(dape_path).exists():
        log.info("DAPE weights not found (%s; get DAPE.pth from %s): tagging with RAM alone",
                 dape_path, DAPE_SOURCE)
        dape_path = None

    device = torch.device(device)
    if device.type == "cpu":
        dtype = torch.float32
    net = ram.load_ram(ram_path, dape_path, device="cpu" if offload else device, dtype=dtype)
    log.info("tagging with RAM%s (%s)", " + DAPE" if dape_path else "", Path(ram_path).name)
    return Tagger(net, device, offload=offload and device.type == "cuda",
                  with_dape=bool(dape_path))


class Tagger:
    """``tags(frame) -> "tag, tag, ..."`` on ``device``; with ``offload`` the network waits in
    (pinned) host memory between frames (so it holds no device memory while the DiTs run).
    ``seconds`` sums the time spent tagging."""

    def __init__(self, ram, device, offload: bool = False, with_dape: bool = False):
        self.ram, self.device = ram, torch.device(device)
        self.host = None
        if offload:
            self.use_offload()
        self.with_dape = with_dape
        self.calls = 0
        self.seconds = 0.0

    @torch.no_grad()
    def tags(self, frame) -> str:
        """Tags of one frame: (H,W,3) uint8 or (3,H,W) float in [0,1]."""
        t0 = time.perf_counter()
        with self.host.on_device() if self.host else contextlib.nullcontext(self.ram) as ram:
            if isinstance(frame, torch.Tensor):
                frame = frame.to(self.device)
            out = ram.tags(frame)
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return out

    def describe(self) -> dict:
        """What decides the tags (recorded with a run's settings)."""
        return {"tagger": "ram+dape" if self.with_dape else "ram",
                "num_tags": len(self.ram.tag_names)}

    def use_offload(self) -> None:
        """From now on the network waits in host memory between frames (on a CUDA device)."""
        if self.device.type == "cuda" and self.host is None:
            self.host = HostCopy(self.ram, self.device)


class ClipPrompts:
    """The prompt of each clip of step 1 (docs/method.md, "Prompt"): without a tagger the run's
    ``prompt``; with one, ``"<prompt>, <tags>"`` of one frame drawn with ``seed`` (once per
    clip, before any window or tile), embedded by the resident text encoder ``text``
    (:class:`~Wan_SR.models.text.PromptEncoder`: from the prompt cache when it was encoded
    before). The pipeline receives the embedding; it does not tag."""

    def __init__(self, prompt: Optional[str], tagger: Optional[Tagger] = None, text=None,
                 seed: int = 0):
        if tagger is not None and text is None:
            raise ValueError("ClipPrompts: tagged prompts need a text encoder")
        self.prompt, self.tagger, self.text, self.seed = prompt, tagger, text, seed

    @property
    def per_clip(self) -> bool:
        """Whether clips get prompts of their own (a tagger is there)."""
        return self.tagger is not None

    def choose(self, name: str, num_frames: int, read_frame: Callable[[int], object]) -> str:
        """The prompt of the clip ``name`` (``read_frame(i)``: its frame i)."""
        if self.tagger is None:
            return self.prompt
        index = pick_frame(num_frames, seed=self.seed)
        prompt = prompt_with_tags(self.prompt, self.tagger.tags(read_frame(index)))
        log.info("%s: prompt (tags of frame %d): %s", name, index, prompt)
        return prompt

    def embed(self, prompt: str) -> torch.Tensor:
        """The embedding of ``prompt`` (1, L, D)."""
        if self.text is None:
            raise RuntimeError("ClipPrompts: no text encoder (built without a tagger)")
        return self.text.encode(prompt)

    def describe(self) -> Optional[dict]:
        """What decides the tags (recorded with a run's settings); None without a tagger."""
        if self.tagger is None:
            return None
        return dict(self.tagger.describe(), frame_seed=self.seed)

    def log_cost(self) -> None:
        """What per-clip tags cost this run: tagging and the text encodes of new prompts."""
        if self.tagger is None or not self.tagger.calls:
            return
        t, text = self.tagger, self.text
        log.info("tags: %d clip(s), %.2f s tagging + %.2f s encoding %d new prompt(s) "
                 "(%.2f s per clip)", t.calls, t.seconds, text.seconds, text.encodes,
                 (t.seconds + text.seconds) / t.calls)
        if text.stream is not None and text.stream.copied_bytes:
            log.info("text encoder: %.2f GiB streamed from host memory",
                     text.stream.copied_bytes / 2 ** 30)
