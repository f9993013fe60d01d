"""One DiT forward for the base and the draft (docs/method.md §3, §4).

``dit_forward`` runs a diffsynth ``WanModel`` (or the pruned :class:`~Wan_SR.models.draft.DraftDiT`)
block by block. For the base it records the hidden state *entering* chosen blocks; for the
draft it first fuses each block's input with a base feature: ``h = fc_j(cat([f_i, h]))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from diffsynth.models.wan_video_dit import sinusoidal_embedding_1d


def _freqs(dit, f: int, h: int, w: int, device) -> torch.Tensor:
    key = (f, h, w, str(device))
    cache = dit.__dict__.setdefault("_pssr_freqs_cache", {})
    if key not in cache:
        fr = dit.freqs
        cache.clear()
        cache[key] = torch.cat([
            fr[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            fr[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            fr[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(f * h * w, 1, -1).to(device)
    return cache[key]


@dataclass
class Checkpointing:
    """Which blocks of a DiT forward recompute their activations in the backward (when gradients
    are on): the first ``recompute`` (None: all); the others keep them. With ``saved`` (a
    list), each kept block appends the bytes it saved for the backward."""
    recompute: Optional[int] = None
    saved: Optional[list] = None


class SavedBytes:
    """Counts the bytes of the tensors saved for the backward inside its ``with`` block
    (each storage once, the module's own parameters not)."""

    def __init__(self, module: torch.nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self.seen, self.bytes = set(), 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def dit_forward(dit, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, *,
                record_blocks: Sequence[int] = (), fc_layers=None,
                features: Optional[Sequence[torch.Tensor]] = None,
                gradient_checkpointing: Union[bool, Checkpointing] = False):
    """Velocity prediction of ``dit`` at ``timestep`` for input ``x`` (B, C, F, H, W).

    Returns ``(v, recorded)`` where ``recorded`` lists the hidden states entering the blocks in
    ``record_blocks`` (in block order). With ``fc_layers``/``features`` (the draft), block j's
    input is ``fc_layers[j](cat([features[j], h], -1))``. ``gradient_checkpointing``: True (every
    block recomputes its activations in the backward), False (none) or a :class:`Checkpointing`.
    """
    ck = gradient_checkpointing if isinstance(gradient_checkpointing, Checkpointing) else \
        Checkpointing(None if gradient_checkpointing else 0)
    recompute = len(dit.blocks) if ck.recompute is None else ck.recompute
    grad = torch.is_grad_enabled()
    t = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, timestep))
    t_mod = dit.time_projection(t).unflatten(1, (6, dit.dim))
    ctx = dit.text_embedding(context)
    h, (f, hh, ww) = dit.patchify(x)
    freqs = _freqs(dit, f, hh, ww, h.device)
    record = set(record_blocks)
    recorded = []
    for i, block in enumerate(dit.blocks):
        if i in record:
            recorded.append(h)
        if fc_layers is not None:
            h = fc_layers[i](torch.cat([features[i].to(h.dtype), h], dim=-1))
        if grad and i < recompute:
            h = torch.utils.checkpoint.checkpoint(block, h, ctx, t_mod, freqs, use_reentrant=False)
        elif grad and ck.saved is not None:
            with SavedBytes(block) as count:
                h = block(h, ctx, t_mod, freqs)
            ck.saved.append(count.bytes)
        else:
            h = block(h, ctx, t_mod, freqs)
    out = dit.head(h, t)
    return dit.unpatchify(out, (f, hh, ww)), recorded
