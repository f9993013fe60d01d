"""Frequency-domain update (docs/method.md §7): keep the low band of the consistent branch and mix
in the high band of the sharp branch, per pixel, on the luma channel only.

All functions take RGB videos as float tensors of shape (T, 3, H, W) (any leading
dimensions work, the channel axis is -3) with values in [0, 1], on CPU or CUDA, and compute
in float32 whatever the input dtype. Nothing here imports diffsynth, so step 1 can call
:func:`fuse_video` in the same pass and step 2 stays light.

- :func:`rgb_to_yuv` / :func:`yuv_to_rgb`: the BT.601 analogue YUV of docs/method.md §7 step 1.
- :func:`butterworth_lowpass_mask`: the centred low-pass mask of step 2 (cached).
- :func:`luma_split`: ``L, Hf`` of step 3.
- :func:`fuse_frames`: steps 1-5 on whole frames.
- :func:`fuse_video`: the same, tile by tile with the shared tile blending of docs/method.md §6.
"""
from __future__ import annotations

import functools

import torch

from Wan_SR.core.options import FusionOptions, WindowOptions
from Wan_SR.core.windows import run_tiled

_F, _W = FusionOptions(), WindowOptions()

# docs/method.md §7 step 1, forward (rows Y, U, V) and inverse (rows R, G, B) coefficients.
YUV_FROM_RGB = ((0.299, 0.587, 0.114),
                (-0.14713, -0.28886, 0.436),
                (0.615, -0.51499, -0.10001))
RGB_FROM_YUV = ((1.0, 0.0, 1.13983),
                (1.0, -0.39465, -0.5806),
                (1.0, 2.03211, 0.0))


def _mix3(rows, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, out=None) -> list[torch.Tensor]:
    """``[r0*a + r1*b + r2*c for each row]`` (zero coefficients skipped), one new tensor per row
    (written into ``out[i]`` when given) built with fused multiply-adds."""
    res = []
    for i, r in enumerate(rows):
        terms = [(coef, plane) for coef, plane in zip(r, (a, b, c)) if coef != 0.0]
        dst = None if out is None else out[i]
        (c0, p0), rest = terms[0], terms[1:]
        if c0 == 1.0 and rest:
            acc = torch.add(p0, rest[0][1], alpha=rest[0][0], out=dst)
            rest = rest[1:]
        else:
            acc = torch.mul(p0, c0, out=dst)
        for coef, plane in rest:
            acc.add_(plane, alpha=coef)
        res.append(acc)
    return res


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected RGB frames of shape (..., 3, H, W), got {tuple(x.shape)}")


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """Y plane (..., H, W) of RGB frames (..., 3, H, W), float32."""
    _check_rgb(rgb, "luma")
    r, g, b = rgb.float().unbind(-3)
    return _mix3(YUV_FROM_RGB[:1], r, g, b)[0]


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> (..., 3, H, W) YUV (channels Y, U, V), float32."""
    _check_rgb(rgb, "rgb_to_yuv")
    r, g, b = rgb.float().unbind(-3)
    return torch.stack(_mix3(YUV_FROM_RGB, r, g, b), dim=-3)


def yuv_to_rgb(yuv: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) YUV -> (..., 3, H, W) RGB, float32, not clamped."""
    _check_rgb(yuv, "yuv_to_rgb")
    y, u, v = yuv.float().unbind(-3)
    return torch.stack(_mix3(RGB_FROM_YUV, y, u, v), dim=-3)


@functools.lru_cache(maxsize=32)
def _centred_mask(height: int, width: int, fc: float, order: int, device: str) -> torch.Tensor:
    u = torch.linspace(-0.5, 0.5, width, dtype=torch.float64)
    v = torch.linspace(-0.5, 0.5, height, dtype=torch.float64)
    r = torch.sqrt(v[:, None] ** 2 + u[None, :] ** 2)
    mask = 1.0 / (1.0 + (r / fc) ** (2 * order))
    return mask.to(device=device, dtype=torch.float32)


def butterworth_lowpass_mask(height: int, width: int, fc: float = 0.20, order: int = 2,
                             device=None) -> torch.Tensor:
    """Centred Butterworth low-pass mask (H, W), float32 (docs/method.md §7 step 2).

    ``u = linspace(-.5, .5, W)``, ``v = linspace(-.5, .5, H)``, ``r = sqrt(u^2 + v^2)``,
    ``1 / (1 + (r / fc)^(2 order))``. Cached per (H, W, fc, order, device): treat the returned
    tensor as read-only.
    """
    if fc <= 0:
        raise ValueError(f"fc must be positive, got {fc}")
    return _centred_mask(int(height), int(width), float(fc), int(order),
                         str(torch.device(device or "cpu")))


@functools.lru_cache(maxsize=32)
def _half_spectrum_mask(height: int, width: int, fc: float, order: int, device: str) -> torch.Tensor:
    """The centred mask moved to FFT order and made Hermitian, cut to the rfft2 half-plane.

    ``ifftshift(fftshift(X) * M) = X * ifftshift(M)``; for real Y, ``real(ifft2(X * Mu))``
    equals ``ifft2(X * (Mu[k] + Mu[-k]) / 2)``, which is Hermitian, so ``irfft2`` of the
    half-plane gives exactly the formula of docs/method.md §7 (the linspace grid is not centred on the zero
    frequency for even sizes, so ``Mu`` alone is not symmetric: the averaging matters).
    """
    mu = torch.fft.ifftshift(_centred_mask(height, width, fc, order, "cpu").double())
    mirrored = torch.roll(torch.flip(mu, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # Mu[-k]
    sym = 0.5 * (mu + mirrored)
    return sym[:, : width // 2 + 1].to(device=device, dtype=torch.float32).contiguous()


def lowpass(y: torch.Tensor, fc: float = 0.20, order: int = 2) -> torch.Tensor:
    """Butterworth low band ``L`` of planes (..., H, W), float32 (docs/method.md §7 step 3).

    Same numbers as ``real(ifft2(ifftshift(fftshift(fft2(Y, 'ortho')) * M), 'ortho'))``
    (up to float rounding), computed with a real FFT.
    """
    y = y.float()
    h, w = y.shape[-2:]
    if fc <= 0:
        raise ValueError(f"fc must be positive, got {fc}")
    mask = _half_spectrum_mask(h, w, float(fc), int(order), str(y.device))
    return torch.fft.irfft2(torch.fft.rfft2(y) * mask, s=(h, w))


def luma_split(y: torch.Tensor, fc: float = 0.20, order: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, Hf)`` with ``Hf = Y - L`` for luma planes (..., H, W), float32."""
    y = y.float()
    low = lowpass(y, fc, order)
    return low, y - low


def fuse_luma(y_c: torch.Tensor, y_s: torch.Tensor, fc: float = 0.20, alpha: float = 0.6,
              border: int = 2, order: int = 2, eps: float = 1e-6) -> torch.Tensor:
    """docs/method.md §7 steps 2-5 on luma planes (..., H, W): the fused luma, float32, not clamped."""
    if y_c.shape != y_s.shape:
        raise ValueError(f"fuse_luma: shapes differ {tuple(y_c.shape)} vs {tuple(y_s.shape)}")
    return _fuse_stacked_luma(torch.stack([y_c.float(), y_s.float()]), fc, alpha, border, order,
                              eps)


def _fuse_stacked_luma(ys: torch.Tensor, fc: float, alpha: float, border: int, order: int,
                       eps: float) -> torch.Tensor:
    """``ys[0]`` = Y_c, ``ys[1]`` = Y_s (float32); returns the fused luma (a new tensor)."""
    y_c = ys[0]
    low = lowpass(ys, fc, order)  # one FFT pass for both planes
    high = ys - low
    low_c, hf_c, hf_s = low[0], high[0], high[1]
    mag = high.abs()
    # w = |Hf_s| / (|Hf_s| + |Hf_c| + eps)
    w = mag[1].div_(mag[0].add_(mag[1]).add_(eps))
    # L_c + alpha * (w * Hf_s + (1 - w) * Hf_c) = L_c + alpha * (Hf_c + w * (Hf_s - Hf_c))
    y = torch.sub(hf_s, hf_c).mul_(w).add_(hf_c)
    y = low_c.add_(y, alpha=alpha)
    if border > 0:
        b = int(border)
        y[..., :b, :] = y_c[..., :b, :]
        y[..., -b:, :] = y_c[..., -b:, :]
        y[..., :, :b] = y_c[..., :, :b]
        y[..., :, -b:] = y_c[..., :, -b:]
    return y


def fuse_frames(consistent: torch.Tensor, sharp: torch.Tensor, fc: float = 0.20, alpha: float = 0.6,
                border: int = 2, order: int = 2, eps: float = 1e-6) -> torch.Tensor:
    """docs/method.md §7 on whole frames: (..., 3, H, W) RGB in [0, 1] -> fused RGB in [0, 1].

    Luma: ``L_c + alpha (w Hf_s + (1 - w) Hf_c)``, ``w = |Hf_s| / (|Hf_s| + |Hf_c| + eps)``;
    the outer ``border`` pixels take ``Y_c``; chroma comes from ``consistent``. Computed in
    float32; returned in the input's floating dtype (float32 for non-float input).
    Note that with ``alpha < 1`` the detail the two branches share is scaled by ``alpha`` too,
    so ``fuse_frames(x, x)`` is ``x`` only for ``alpha = 1``.
    """
    _check_rgb(consistent, "consistent")
    _check_rgb(sharp, "sharp")
    if consistent.shape != sharp.shape:
        raise ValueError(f"fuse_frames: shapes differ {tuple(consistent.shape)} vs "
                         f"{tuple(sharp.shape)}")
    out_dtype = consistent.dtype if consistent.is_floating_point() else torch.float32
    plane = consistent.shape[:-3] + consistent.shape[-2:]
    ys = torch.empty((2,) + plane, dtype=torch.float32, device=consistent.device)
    r, g, b = consistent.float().unbind(-3)
    _mix3(YUV_FROM_RGB[:1], r, g, b, out=ys[:1])
    u_c, v_c = _mix3(YUV_FROM_RGB[1:], r, g, b)
    del r, g, b
    _mix3(YUV_FROM_RGB[:1], *sharp.float().unbind(-3), out=ys[1:])
    y = _fuse_stacked_luma(ys, fc, alpha, border, order, eps)
    del ys
    out = torch.empty(consistent.shape, dtype=torch.float32, device=consistent.device)
    _mix3(RGB_FROM_YUV, y, u_c, v_c, out=out.unbind(-3))
    return out.clamp_(0.0, 1.0).to(out_dtype)


def fuse_video(consistent: torch.Tensor, sharp: torch.Tensor, *, fc: float = _F.fc,
               alpha: float = _F.alpha, border: int = _F.border, order: int = _F.order,
               eps: float = _F.eps, window_h: int = _W.window_h, window_w: int = _W.window_w,
               overlap_h: int = _W.overlap_h, overlap_w: int = _W.overlap_w) -> torch.Tensor:
    """:func:`fuse_frames` per spatial tile (docs/method.md §6 tiles and weights, via
    :func:`Wan_SR.core.windows.run_tiled`). A frame not larger than the window is one tile,
    and then this is exactly :func:`fuse_frames`."""
    fn = functools.partial(fuse_frames, fc=fc, alpha=alpha, border=border, order=order, eps=eps)
    return run_tiled(fn, consistent, sharp, window_h=window_h, window_w=window_w,
                     overlap_h=overlap_h, overlap_w=overlap_w)
