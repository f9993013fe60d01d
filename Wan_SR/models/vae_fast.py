"""The Wan2.1 VAE's encoder and decoder, stepped chunk by chunk with fewer memory passes
(docs/method.md, "VAE speed"). Same modules, same weights, same math as diffsynth's
``Encoder3d.forward`` / ``Decoder3d.forward`` (the reference, kept and used with ``fast=False``):

- RMS norm + SiLU in one pass (a Triton kernel on CUDA for channels-last activations; the same
  formula in float32 elsewhere), written straight into the causal convolution's input buffer
  behind the two cached frames, so the reference's separate ``cat`` and ``pad`` copies vanish;
- the spatial zero padding of each causal 3x3x3 convolution is done by the convolution itself;
- nearest upsampling in the activations' own dtype (the reference casts to float32 and back;
  nearest copies values, so the result is the same).

The causal cache of every convolution always holds two frames (zeros before the first chunk),
which is what the reference's zero padding of a shorter cache amounts to.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffsynth.models.wan_video_vae import (AttentionBlock, Decoder3d, Encoder3d, Resample,
                                            ResidualBlock)

CL3 = torch.channels_last_3d
# Round to bf16 between the norm's steps as the reference's op-by-op code does (False: round
# once, a little closer to exact arithmetic). Benchmarks compare both against float32.
EMULATE_ROUNDING = True


# --------------------------------------------------------------------------- fused kernels
_TRITON = None


def _triton_kernels():
    """The fused kernels, or None when Triton is not usable (then torch ops run)."""
    global _TRITON
    if _TRITON is None:
        try:  # triton exists only on CUDA machines
            import triton
            import triton.language as tl

            @triton.jit
            def _bf(v, ROUND: tl.constexpr):
                # round to the activations' dtype, as the reference's op-by-op code does
                if ROUND:
                    v = v.to(tl.bfloat16).to(tl.float32)
                return v

            @triton.jit
            def rms_silu(x_ptr, b_ptr, g_ptr, y_ptr, n_rows, C, scale, eps,
                         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
                         ROUND: tl.constexpr):
                rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
                cols = tl.arange(0, BLOCK_C)
                cmask = cols < C
                mask = (rows < n_rows)[:, None] & cmask[None, :]
                offs = rows[:, None].to(tl.int64) * C + cols[None, :]
                x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                if HAS_BIAS:  # the producing convolution's bias, added as cuDNN's path adds it
                    b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
                    x = _bf(x + b[None, :], ROUND)
                    x = tl.where(mask, x, 0.0)
                norm = _bf(tl.sqrt(tl.sum(x * x, axis=1)), ROUND)
                y = _bf(x / tl.maximum(norm, eps)[:, None], ROUND)
                y = _bf(y * scale, ROUND)
                g = tl.load(g_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
                y = _bf(y * g[None, :], ROUND)
                y = y * tl.sigmoid(y)
                tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

            @triton.jit
            def bias_residual(y_ptr, b_ptr, h_ptr, n_rows, C, BLOCK_R: tl.constexpr,
                              BLOCK_C: tl.constexpr, ROUND: tl.constexpr):
                rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
                cols = tl.arange(0, BLOCK_C)
                cmask = cols < C
                mask = (rows < n_rows)[:, None] & cmask[None, :]
                offs = rows[:, None].to(tl.int64) * C + cols[None, :]
                y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
                h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                y = _bf(y + b[None, :], ROUND) + h
                tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

            _TRITON = (triton, rms_silu, bias_residual)
        except Exception:  # no triton, or no GPU for it
            _TRITON = False
    return _TRITON or None


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=CL3)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """Buffers are channels-last on CUDA (the fused kernels' layout), else like ``x``."""
    return CL3 if x.is_cuda or _is_channels_last(x) else torch.contiguous_format


def _grid(kern, x: torch.Tensor):
    """Launch geometry for a (rows, C) channels-last tensor: rows of C contiguous values."""
    triton = kern[0]
    C = x.shape[1]
    block_c = triton.next_power_of_2(C)
    block_r = max(1, 4096 // block_c)
    return (triton.cdiv(x.numel() // C, block_r),), x.numel() // C, C, block_r, block_c


def _fusable(*ts) -> Optional[tuple]:
    kern = _triton_kernels() if ts[0].is_cuda else None
    if kern is None or not all(_is_channels_last(t) for t in ts):
        return None
    if ts[0].dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return None
    return kern


def norm_silu(x: torch.Tensor, norm, out: Optional[torch.Tensor] = None,
              bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``silu(RMS_norm(x + bias))`` (diffsynth ``RMS_norm``: its ``gamma``, ``scale`` and
    ``bias``; ``bias`` here is the producing convolution's, left out of it) in one pass, with
    the reference's roundings to the activations' dtype between the steps; stored in ``out``
    (same shape) or a new tensor."""
    if out is None:
        out = torch.empty_like(x, memory_format=_layout(x))
    nb = norm.bias
    kern = _fusable(x, out)
    if kern is not None and not isinstance(nb, torch.Tensor) and float(nb) == 0.0:
        grid, n_rows, C, block_r, block_c = _grid(kern, x)
        kern[1][grid](x, bias if bias is not None else x, norm.gamma.reshape(-1), out, n_rows,
                      C, float(norm.scale), 1e-12, BLOCK_R=block_r, BLOCK_C=block_c,
                      HAS_BIAS=bias is not None,
                      ROUND=EMULATE_ROUNDING and x.dtype == torch.bfloat16, num_warps=4)
        return out
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1, 1)
    out.copy_(F.silu(F.normalize(x, dim=1) * norm.scale * norm.gamma + nb))
    return out


def add_bias_residual(y: torch.Tensor, bias: Optional[torch.Tensor],
                      h: torch.Tensor) -> torch.Tensor:
    """``y = (y + bias) + h`` in place, in one pass where it can."""
    kern = _fusable(y, h) if bias is not None else None
    if kern is not None:
        grid, n_rows, C, block_r, block_c = _grid(kern, y)
        kern[2][grid](y, bias, h, n_rows, C, BLOCK_R=block_r, BLOCK_C=block_c,
                      ROUND=EMULATE_ROUNDING and y.dtype == torch.bfloat16, num_warps=4)
        return y
    if bias is not None:
        y.add_(bias.view(1, -1, 1, 1, 1))
    return y.add_(h)


# --------------------------------------------------------------------------- causal conv
class State:
    """The causal caches of one clip: per convolution its last two input frames, per temporal
    resampler whether it has seen a chunk."""

    def __init__(self):
        self.frames: dict = {}
        self.seen: set = set()


def _frame_buffer(state: State, conv, x: torch.Tensor) -> torch.Tensor:
    """A (B, C, 2 + T, H, W) buffer whose first two frames hold ``conv``'s cache (zeros before
    the first chunk); the caller writes the T new frames behind them."""
    B, C, T, H, W = x.shape
    buf = torch.empty((B, C, T + 2, H, W), dtype=x.dtype, device=x.device,
                      memory_format=_layout(x))
    prev = state.frames.get(id(conv))
    if prev is None:
        buf[:, :, :2].zero_()
    else:
        buf[:, :, :2].copy_(prev)
    return buf


def _causal_conv(state: State, conv, buf: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """``conv`` (a diffsynth ``CausalConv3d``) on a filled buffer; keeps its last two frames.
    ``bias`` False leaves the bias to the caller (added by the next fused kernel)."""
    state.frames[id(conv)] = buf[:, :, -2:].clone(memory_format=torch.preserve_format)
    pad = (0, conv._padding[2], conv._padding[0])  # temporal padding is the cache itself
    return F.conv3d(buf, conv.weight, conv.bias if bias else None, conv.stride, pad,
                    conv.dilation, conv.groups)


def cached_conv(state: State, conv, x: torch.Tensor) -> torch.Tensor:
    """A causal 3x3x3 (or 3x1x1) convolution of ``x`` with its cache."""
    buf = _frame_buffer(state, conv, x)
    buf[:, :, 2:].copy_(x)
    return _causal_conv(state, conv, buf)


def norm_silu_conv(state: State, norm, conv, x: torch.Tensor,
                   x_bias: Optional[torch.Tensor] = None, bias: bool = True) -> torch.Tensor:
    """``conv(silu(norm(x + x_bias)))`` with the cache, the norm written into the conv's
    buffer (``bias`` False: the conv's own bias is left to the caller)."""
    buf = _frame_buffer(state, conv, x)
    norm_silu(x, norm, out=buf[:, :, 2:], bias=x_bias)
    return _causal_conv(state, conv, buf, bias=bias)


def _pointwise_conv(conv, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 ``CausalConv3d`` (no temporal reach, no cache)."""
    return F.conv3d(x, conv.weight, conv.bias)


# --------------------------------------------------------------------------- blocks
def residual_block(state: State, block, x: torch.Tensor) -> torch.Tensor:
    norm1, _silu1, conv1, norm2, _silu2, _drop, conv2 = block.residual
    h = x if isinstance(block.shortcut, torch.nn.Identity) else _pointwise_conv(block.shortcut, x)
    y = norm_silu_conv(state, norm1, conv1, x, bias=False)
    y = norm_silu_conv(state, norm2, conv2, y, x_bias=conv1.bias, bias=False)
    return add_bias_residual(y, conv2.bias, h)


def upsample2x(f: torch.Tensor) -> torch.Tensor:
    """Nearest (= nearest-exact at scale 2) 2x upsampling of (N, C, H, W), in ``f``'s dtype and
    layout: each value copied to a 2x2 block."""
    N, C, H, W = f.shape
    if f.is_contiguous(memory_format=torch.channels_last):
        v = f.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(N, H, 2, W, 2, C)
        return v.reshape(N, 2 * H, 2 * W, C).permute(0, 3, 1, 2)
    return F.interpolate(f, scale_factor=(2.0, 2.0), mode="nearest-exact")


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D op to every frame of (B, C, T, H, W)."""
    B, C, T = x.shape[:3]
    y = fn(x.permute(0, 2, 1, 3, 4).reshape(B * T, C, *x.shape[3:]))
    return y.reshape(B, T, *y.shape[1:]).permute(0, 2, 1, 3, 4)


def resample(state: State, layer, x: torch.Tensor) -> torch.Tensor:
    """diffsynth ``Resample`` (up/down, 2-D and 3-D) with the cache rules of its forward."""
    mode = layer.mode
    if mode == "upsample3d":
        if id(layer) not in state.seen:  # the first chunk passes the time conv by
            state.seen.add(id(layer))
        else:
            B, C, T, H, W = x.shape
            y = cached_conv(state, layer.time_conv, x)  # (B, 2C, T, H, W): two frames per frame
            x = torch.empty((B, C, 2 * T, H, W), dtype=y.dtype, device=y.device,
                            memory_format=_layout(y))
            x[:, :, 0::2] = y[:, :C]
            x[:, :, 1::2] = y[:, C:]
    if mode in ("upsample2d", "upsample3d"):
        conv = layer.resample[1]
        x = _per_frame(lambda f: conv(upsample2x(f)), x)
    elif mode in ("downsample2d", "downsample3d"):
        x = _per_frame(layer.resample, x)
    if mode == "downsample3d":
        prev = state.frames.get(id(layer))
        state.frames[id(layer)] = x[:, :, -1:].clone(memory_format=torch.preserve_format)
        if prev is not None:
            x = layer.time_conv(torch.cat([prev, x], 2))
    return x


def _run(state: State, layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer, ResidualBlock):
            x = residual_block(state, layer, x)
        elif isinstance(layer, Resample):
            x = resample(state, layer, x)
        elif isinstance(layer, AttentionBlock):
            x = layer(x)
        else:
            raise TypeError(f"vae_fast: unexpected layer {type(layer).__name__}")
    return x


def _coder_step(state: State, coder, stages, x: torch.Tensor) -> torch.Tensor:
    """``conv1``, the layer ``stages`` in order, then the head (norm, SiLU, causal conv)."""
    x = cached_conv(state, coder.conv1, x)
    for stage in stages:
        x = _run(state, stage, x)
    norm, _silu, conv = coder.head
    return norm_silu_conv(state, norm, conv, x)


def encoder_step(state: State, encoder, x: torch.Tensor) -> torch.Tensor:
    """``Encoder3d.forward(x, feat_cache, ...)`` for one chunk (frame 0, then 4 frames)."""
    return _coder_step(state, encoder, (encoder.downsamples, encoder.middle), x)


def decoder_step(state: State, decoder, x: torch.Tensor) -> torch.Tensor:
    """``Decoder3d.forward(x, feat_cache, ...)`` for one latent frame."""
    return _coder_step(state, decoder, (decoder.middle, decoder.upsamples), x)


def supported(vae) -> bool:
    """The fast path knows the Wan2.1 VAE (``VideoVAE_``); other variants use the reference."""
    m = getattr(vae, "model", None)
    return isinstance(getattr(m, "encoder", None), Encoder3d) and \
        isinstance(getattr(m, "decoder", None), Decoder3d)


@torch.no_grad()
def encode(vae, video: torch.Tensor, frames_per_step: int = 4) -> torch.Tensor:
    """Like ``VideoVAE_.encode(video, vae.scale)``: (B,3,T,H,W) in [-1,1] -> normalised latents.
    Frame 0 alone, then ``frames_per_step`` frames per step (a multiple of 4; the reference
    steps 4 at a time: the same math, as the causal caches carry what a step needs)."""
    if frames_per_step % 4:
        raise ValueError(f"frames_per_step must be a multiple of 4, got {frames_per_step}")
    model = vae.model
    state = State()
    outs = [encoder_step(state, model.encoder, video[:, :, :1])]
    end = 1 + 4 * ((video.shape[2] - 1) // 4)  # as the reference: whole 4-frame steps only
    for t in range(1, end, frames_per_step):
        outs.append(encoder_step(state, model.encoder,
                                 video[:, :, t:min(t + frames_per_step, end)]))
    mu, _log_var = _pointwise_conv(model.conv1, torch.cat(outs, 2)).chunk(2, dim=1)
    mean, inv_std = latent_scale(vae, mu)
    return (mu - mean) * inv_std


def latent_steps(length: int, latents_per_step: int = 1) -> list:
    """The decoder's steps over ``length`` latent frames as (start, stop): the first latent
    alone, then ``latents_per_step`` at a time (the reference decodes one at a time: the same
    math, as the causal caches carry what a step needs)."""
    if latents_per_step < 1:
        raise ValueError(f"latents_per_step must be >= 1, got {latents_per_step}")
    return [(0, min(1, length))] + [(i, min(i + latents_per_step, length))
                                    for i in range(1, length, latents_per_step)]


@torch.no_grad()
def decode(vae, z: torch.Tensor, latents_per_step: int = 1) -> torch.Tensor:
    """Like ``VideoVAE_.decode(z, vae.scale)`` (not clamped): latents -> (B,3,T,H,W)."""
    model = vae.model
    mean, inv_std = latent_scale(vae, z)
    x = _pointwise_conv(model.conv2, z / inv_std + mean)
    state = State()
    out = None
    t = 0
    for i, j in latent_steps(x.shape[2], latents_per_step):
        y = decoder_step(state, model.decoder, x[:, :, i:j])
        if out is None:
            B, C, _, H, W = y.shape
            out = torch.empty((B, C, 1 + 4 * (x.shape[2] - 1), H, W), dtype=y.dtype,
                              device=y.device)
        out[:, :, t:t + y.shape[2]].copy_(y)
        t += y.shape[2]
    return out[:, :, :t]


def latent_scale(vae, like: torch.Tensor):
    """(mean, 1/std) broadcastable over (B, C, T, H, W), as ``VideoVAE_.encode/decode`` use them."""
    scale, z_dim = vae.scale, vae.model.z_dim
    if isinstance(scale[0], torch.Tensor):
        mean, inv_std = (s.to(dtype=like.dtype, device=like.device) for s in scale)
        return mean.view(1, z_dim, 1, 1, 1), inv_std.view(1, z_dim, 1, 1, 1)
    scale = scale.to(dtype=like.dtype, device=like.device)
    return scale[0], scale[1]
