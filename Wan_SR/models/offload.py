"""Weights kept in host memory and brought to the GPU when they are needed (docs/method.md,
"GPU memory").

- :class:`HostCopy`: a whole module held in host memory (pinned on CUDA machines, so copies are
  fast and asynchronous); :meth:`HostCopy.on_device` gives it device copies of its weights for a
  piece of work and drops them after (weights do not change: nothing is copied back).
- :class:`BlockStream`: a transformer whose blocks (a ``ModuleList`` of equal blocks) beyond the
  first ``resident`` live in host memory and pass through two device slots: while block ``j``
  computes, the next streamed block is copied into the other slot on a side stream, so only the
  copies that outlast the compute cost time.
- :func:`stream_text_encoder`: the umT5 encoder streamed block by block, its 2 GB token
  embedding looked up on the CPU.

Both move weights by pointing each parameter's ``.data`` at the host copy or a device copy; the
arithmetic is the same as with the module on the device (the same kernels on the same values).
On the CPU the copies are plain copies, so the tests run every step of the mechanism there.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


def module_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module`` once (shared ones once)."""
    seen, out = set(), []
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module_tensors(module))


def pin_available() -> bool:
    """Pinned (page-locked) host memory needs a CUDA runtime with a device."""
    return torch.cuda.is_available()


def to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    """``t``'s values in host memory (pinned with ``pin``): one copy at most."""
    h = t.detach()
    if pin:
        return h.pin_memory() if h.device.type == "cpu" else h.to("cpu").pin_memory()
    return h.to("cpu")


class HostCopy:
    """``module``'s weights in host memory; :meth:`on_device` lends them to ``device``."""

    def __init__(self, module: torch.nn.Module, device, pin: Optional[bool] = None):
        self.module, self.device = module, torch.device(device)
        pin = pin_available() if pin is None else pin
        self.pairs = []
        for t in module_tensors(module):
            h = to_host(t, pin)
            t.data = h
            self.pairs.append((t, h))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for _, h in self.pairs)

    @contextlib.contextmanager
    def on_device(self) -> Iterator[torch.nn.Module]:
        """The module with device copies of its weights, for the ``with`` block."""
        for t, h in self.pairs:
            t.data = h.to(self.device, non_blocking=True)
        try:
            yield self.module
        finally:
            for t, h in self.pairs:
                t.data = h


class BlockStream:
    """Blocks ``resident..`` of ``blocks`` stream from host memory through two device slots
    (hooks on those blocks; the module's other parts are the caller's). ``copied_bytes``
    counts what crossed to the device."""

    def __init__(self, blocks: torch.nn.ModuleList, device, resident: int = 0,
                 pin: Optional[bool] = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        pin = pin_available() if pin is None else pin
        n = len(blocks)
        self.resident = max(0, min(int(resident), n))
        self.order = list(range(self.resident, n))
        self.host: dict = {}
        self.copied_bytes = 0
        for i, block in enumerate(blocks):
            if i < self.resident:
                block.to(self.device)
                continue
            pairs = []
            for t in module_tensors(block):
                h = to_host(t, pin)
                t.data = h
                pairs.append((t, h))
            self.host[i] = pairs
            block._pssr_stream_index = i
            block.register_forward_pre_hook(self._before)
            block.register_forward_hook(self._after)
        self.slots = []
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda and self.order else None
        self.release()
        if self.cuda:
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Free the two slots (made again at the next use): for a model used now and then, like
        the text encoder, so that its slots do not sit beside the DiTs' work."""
        if self.copy_stream is not None:
            self.copy_stream.synchronize()
        self.slots = []
        self.ready: dict = {}      # block -> (slot, event or None): copied or being copied
        self.freed = [None, None]  # per slot: the event after its last block's compute
        self.last_slot = 1

    def _ensure_slots(self) -> None:
        if not self.slots and self.order:
            first = self.host[self.order[0]]
            self.slots = [[torch.empty_like(h, device=self.device) for _, h in first]
                          for _ in range(min(2, len(self.order)))]

    @property
    def streamed(self) -> int:
        return len(self.order)

    @property
    def slot_bytes(self) -> int:
        return sum(s.numel() * s.element_size() for slot in self.slots for s in slot)

    def _issue(self, i: int, slot: int) -> None:
        """Copy block ``i`` into ``slot`` (on the side stream, after the slot's last use)."""
        dst = self.slots[slot]
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                if self.freed[slot] is not None:
                    self.copy_stream.wait_event(self.freed[slot])
                for (_, h), d in zip(self.host[i], dst):
                    d.copy_(h, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.copy_stream)
        else:
            for (_, h), d in zip(self.host[i], dst):
                d.copy_(h)
            event = None
        self.copied_bytes += sum(h.numel() * h.element_size() for _, h in self.host[i])
        self.ready[i] = (slot, event)

    def _next(self, i: int) -> int:
        k = self.order.index(i)
        return self.order[(k + 1) % len(self.order)]

    def _before(self, block, args):
        i = block._pssr_stream_index
        self._ensure_slots()
        if i not in self.ready:
            self._issue(i, (self.last_slot + 1) % len(self.slots))
        slot, event = self.ready.pop(i)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        for (t, _), d in zip(self.host[i], self.slots[slot]):
            t.data = d
        self.last_slot = slot
        nxt = self._next(i)
        if len(self.slots) > 1 and nxt != i and nxt not in self.ready:
            self._issue(nxt, 1 - slot)

    def _after(self, block, args, output):
        i = block._pssr_stream_index
        for t, h in self.host[i]:
            t.data = h
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self.freed[self.last_slot] = event
        return output


def stream_text_encoder(encoder: torch.nn.Module, device, resident: int = 0,
                        pin: Optional[bool] = None) -> BlockStream:
    """The umT5 encoder (diffsynth's ``WanTextEncoder``) with its blocks streamed and its token
    embedding kept in host memory: the ids go to the CPU for the look-up and the embeddings come
    back to ``device``. Its other parts (the final norm) move to ``device``."""
    device = torch.device(device)
    emb = encoder.token_embedding
    emb.to("cpu")

    def ids_to_host(module, args):
        return (args[0].to("cpu"),) + tuple(args[1:])

    def back_to_device(module, args, output):
        return output.to(device, non_blocking=True)

    emb.register_forward_pre_hook(ids_to_host)
    emb.register_forward_hook(back_to_device)
    for name, child in encoder.named_children():
        if name not in ("token_embedding", "blocks"):
            child.to(device)
    return BlockStream(encoder.blocks, device, resident=resident, pin=pin)
