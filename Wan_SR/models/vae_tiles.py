"""The Wan2.1 VAE in spatial tiles with the untiled result (docs/method.md, "GPU memory").

What the VAE holds at full resolution is mostly its causal caches (two frames per convolution),
kept for the whole window. Here each tile runs through the whole window on its own (tile after
tile), with its own caches, so only one tile's activations and caches are held at a time. The
tiles overlap by the *reach* of the layers they run (how far a layer's output looks at its input,
summed over the layers), and each keeps only its core: every kept value sees exactly the inputs
it sees untiled, so the result equals the untiled one (same kernels, same values). The parts with
global reach (the middle blocks, whose attention spans the frame) run untiled at latent
resolution, where they are small:

- decode: ``conv2``, then per latent frame ``conv1`` and the middle on the whole frame; then per
  tile the up-sampling stages and the head over all frames;
- encode: per tile ``conv1`` and the down-sampling stages over all chunks; then per chunk the
  middle and the head on the whole latent frame, and ``conv1`` (the latent projection).

Built on the fused steps of :mod:`Wan_SR.models.vae_fast` (on the CPU they run their float32
formulas), so tiles work on every device.
"""
from __future__ import annotations

import math

import torch
from diffsynth.models.wan_video_vae import AttentionBlock, Resample, ResidualBlock

from . import vae_fast
from .vae_fast import State, cached_conv, latent_scale, norm_silu_conv

SCALE = 8  # pixels per latent pixel


class TilingError(ValueError):
    """The VAE has a layer with global reach where tiles would cut it."""


def _reach(layers, scale: float) -> tuple[float, float]:
    """``(reach, scale)`` after ``layers``: the reach in units of the first layer's input, and
    the scale of the layers' resolution relative to that input."""
    reach = 0.0
    for layer in layers:
        if isinstance(layer, ResidualBlock):
            reach += 2 * scale          # two 3x3 convolutions (the shortcut is 1x1)
        elif isinstance(layer, Resample):
            if layer.mode.startswith("upsample"):
                scale /= 2
                reach += scale           # the 3x3 convolution after the 2x up-sampling
            elif layer.mode.startswith("downsample"):
                reach += 2 * scale       # 3x3 stride 2 after a (0, 1) zero pad
                scale *= 2
        elif isinstance(layer, AttentionBlock):
            raise TilingError("the VAE has attention outside its middle blocks: tiles would cut "
                              "it (run without VAE tiles)")
        else:
            raise TilingError(f"unexpected VAE layer {type(layer).__name__}")
    return reach, scale


def decoder_halo(decoder) -> int:
    """Latent pixels each decoder tile needs beyond its core (up-sampling stages and head)."""
    reach, scale = _reach(decoder.upsamples, 1.0)
    return math.ceil(reach + scale) + 1


def encoder_halo(encoder) -> int:
    """Pixels each encoder tile needs beyond its core (``conv1`` and the down-sampling stages),
    rounded up to whole latent pixels."""
    reach, _ = _reach(encoder.downsamples, 1.0)
    return SCALE * (math.ceil((reach + 1) / SCALE) + 1)


def spans(length: int, parts: int, halo: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """``parts`` cores covering ``[0, length)`` (starts multiples of ``align``), each with its
    tile (the core widened by ``halo`` on both sides, inside the range):
    ``[(core_start, core_end, tile_start, tile_end), ...]``."""
    units = length // align
    parts = max(1, min(parts, units))
    cuts = [align * (units * k // parts) for k in range(parts)] + [length]
    return [(a, b, max(0, a - halo), min(length, b + halo)) for a, b in zip(cuts, cuts[1:])]


def _tile(x: torch.Tensor, rows, cols) -> torch.Tensor:
    return x[..., rows[2]:rows[3], cols[2]:cols[3]].contiguous(
        memory_format=vae_fast._layout(x))


def _core(y: torch.Tensor, rows, cols, factor: float) -> torch.Tensor:
    r0, r1 = int((rows[0] - rows[2]) * factor), int((rows[1] - rows[2]) * factor)
    c0, c1 = int((cols[0] - cols[2]) * factor), int((cols[1] - cols[2]) * factor)
    return y[..., r0:r1, c0:c1]


@torch.no_grad()
def decode(vae, z: torch.Tensor, tiles: tuple[int, int]) -> torch.Tensor:
    """:func:`Wan_SR.models.vae_fast.decode` in ``tiles = (rows, cols)`` tiles (not clamped)."""
    model, dec = vae.model, vae.model.decoder
    mean, inv_std = latent_scale(vae, z)
    x = vae_fast._pointwise_conv(model.conv2, z / inv_std + mean)
    state, middle = State(), []
    for i in range(x.shape[2]):  # global reach: untiled, at latent resolution
        h = cached_conv(state, dec.conv1, x[:, :, i:i + 1])
        middle.append(vae_fast._run(state, dec.middle, h))
    del state, x
    halo = decoder_halo(dec)
    H, W = middle[0].shape[-2:]
    out, norm, conv = None, dec.head[0], dec.head[2]
    for rows in spans(H, tiles[0], halo):
        for cols in spans(W, tiles[1], halo):
            state, t = State(), 0
            for h in middle:
                y = vae_fast._run(state, dec.upsamples, _tile(h, rows, cols))
                y = norm_silu_conv(state, norm, conv, y)
                if out is None:
                    out = torch.empty((y.shape[0], y.shape[1], 1 + 4 * (len(middle) - 1),
                                       SCALE * H, SCALE * W), dtype=y.dtype, device=y.device)
                n = y.shape[2]
                out[:, :, t:t + n, SCALE * rows[0]:SCALE * rows[1],
                    SCALE * cols[0]:SCALE * cols[1]] = _core(y, rows, cols, SCALE)
                t += n
    return out


@torch.no_grad()
def encode(vae, video: torch.Tensor, tiles: tuple[int, int]) -> torch.Tensor:
    """:func:`Wan_SR.models.vae_fast.encode` in ``tiles = (rows, cols)`` tiles: (B,3,T,H,W) in
    [-1,1], H and W multiples of 16 -> normalised latents."""
    model, enc = vae.model, vae.model.encoder
    T, H, W = video.shape[2:]
    bounds = [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((T - 1) // 4)]
    halo = encoder_halo(enc)
    feats = [None] * len(bounds)
    for rows in spans(H, tiles[0], halo, align=SCALE):
        for cols in spans(W, tiles[1], halo, align=SCALE):
            state = State()
            for k, (a, b) in enumerate(bounds):
                y = cached_conv(state, enc.conv1, _tile(video[:, :, a:b], rows, cols))
                y = vae_fast._run(state, enc.downsamples, y)
                if feats[k] is None:
                    feats[k] = torch.empty(y.shape[:3] + (H // SCALE, W // SCALE),
                                           dtype=y.dtype, device=y.device,
                                           memory_format=vae_fast._layout(y))
                feats[k][..., rows[0] // SCALE:rows[1] // SCALE,
                         cols[0] // SCALE:cols[1] // SCALE] = _core(y, rows, cols, 1 / SCALE)
    state, outs, norm, conv = State(), [], enc.head[0], enc.head[2]
    for k in range(len(feats)):  # global reach: untiled, at latent resolution
        y = vae_fast._run(state, enc.middle, feats[k])
        feats[k] = None
        outs.append(norm_silu_conv(state, norm, conv, y))
    mu, _log_var = vae_fast._pointwise_conv(model.conv1, torch.cat(outs, 2)).chunk(2, dim=1)
    mean, inv_std = latent_scale(vae, mu)
    return (mu - mean) * inv_std
