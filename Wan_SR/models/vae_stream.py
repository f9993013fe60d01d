"""Streamed Wan2.1 VAE encode and decode (docs/method.md, "Latent windows").

The causal VAE is fed the way diffsynth's ``VideoVAE_.encode``/``decode`` feed it (frame 0
alone, then chunks of 4 frames with one feature cache), but chunk by chunk from the caller, so a
whole full-resolution clip is never in memory. Results equal the whole-clip calls to float
tolerance.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import torch
from diffsynth.models.wan_video_vae import count_conv3d

from . import vae_fast
from .vae_fast import latent_scale
from .wan import use_fast_vae


def vae_dtype(vae) -> torch.dtype:
    return next(vae.parameters()).dtype


def _new_cache(module) -> list:
    return [None] * count_conv3d(module)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _stepper(vae, part: str, like: torch.Tensor) -> Callable:
    """One chunk through ``vae.model.<part>`` (``encoder`` or ``decoder``) with one causal cache:
    the fast path where :func:`Wan_SR.models.wan.use_fast_vae` chooses it (CUDA), diffsynth's
    forward otherwise."""
    module = getattr(vae.model, part)
    if use_fast_vae(vae, like):
        state, step = vae_fast.State(), getattr(vae_fast, f"{part}_step")
        return lambda x: step(state, module, x)
    cache = _new_cache(module)
    return lambda x: module(x, feat_cache=cache, feat_idx=[0])


@torch.no_grad()
def encode_chunks(vae, chunks: Iterable[torch.Tensor], *, device, dtype,
                  memory_format: Optional[Callable] = None) -> torch.Tensor:
    """Encode a clip given as chunks (frame 0, then 4 frames at a time; (n,3,H,W) in [0,1]) with
    one causal feature cache, exactly like ``VideoVAE_.encode`` on the whole clip. Returns
    latents (1,16,T',H/8,W/8)."""
    fmt = memory_format or _same
    model, wdtype = vae.model, vae_dtype(vae)
    step, outs = _stepper(vae, "encoder", torch.empty(0, device=device)), []
    for chunk in chunks:
        x = (chunk.to(device, dtype) * 2 - 1).permute(1, 0, 2, 3).unsqueeze(0)
        outs.append(step(fmt(x).to(wdtype)))
    del step
    mu, _log_var = model.conv1(torch.cat(outs, 2)).chunk(2, dim=1)
    mean, inv_std = latent_scale(vae, mu)
    return ((mu - mean) * inv_std).contiguous()


class StreamDecoder:
    """Decodes a latent volume one latent frame at a time with its own causal cache, like
    ``VideoVAE_.decode``; :meth:`next` returns the next chunk as (n,3,H,W) float32 in [0,1]
    (n = 1 for the first latent, 4 after)."""

    @torch.no_grad()
    def __init__(self, vae, latents: torch.Tensor, *, device,
                 memory_format: Optional[Callable] = None):
        model = vae.model
        z = (memory_format or _same)(latents.to(device, vae_dtype(vae)))
        mean, inv_std = latent_scale(vae, z)
        self.x = model.conv2(z / inv_std + mean)
        self.step = _stepper(vae, "decoder", z)
        self.length, self.i = z.shape[2], 0

    @torch.no_grad()
    def next(self) -> torch.Tensor:
        if self.i >= self.length:
            raise RuntimeError("StreamDecoder: every latent frame is already decoded")
        y = self.step(self.x[:, :, self.i:self.i + 1])
        self.i += 1
        if self.i == self.length:
            self.step = None
        return (y.clamp_(-1, 1)[0].permute(1, 0, 2, 3).float() + 1) / 2


def decode_in_lockstep(decoders: dict, num_frames: int, height: int,
                       width: int) -> Iterator[dict]:
    """Step the :class:`StreamDecoder` s {branch: decoder} together, yielding {branch: (n,3,H,W)}
    chunks in [0,1] cropped to ``num_frames`` x ``height`` x ``width``."""
    length = next(iter(decoders.values())).length
    emitted = 0
    for _ in range(length):
        chunk = {b: d.next() for b, d in decoders.items()}
        n = min(next(iter(chunk.values())).shape[0], num_frames - emitted)
        if n > 0:
            yield {b: c[:n, :, :height, :width] for b, c in chunk.items()}
            emitted += n
