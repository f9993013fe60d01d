"""Degradation operations on a stack of frames ``x`` of shape (N, 3, H, W), float in [0, 1].

N is the frames of one clip (or several clips' frames) processed as one batch; every "per
frame" parameter is a tensor of length N. Nothing here loops over pixels or frames in Python
(except :func:`color_jitter`, which takes one set of factors per call).

- :func:`filter2d`: each frame with its own kernel, reflect padding, depth-wise; an FFT path
  gives the same result (to float rounding) much faster for large frames.
- :func:`gaussian_noise` / :func:`poisson_noise`: colour or gray noise with per-frame strength.
- :func:`jpeg`: DiffJPEG-style JPEG round trip (standard tables, quality->scale mapping,
  YCbCr, 4:2:0 chroma by 2x2 averaging, 8x8 DCT, rounding), per-frame quality.
- :func:`resize`, :func:`quantize_8bit`, :func:`to_gray`, :func:`color_jitter`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

INTERP_MODES = ("area", "bilinear", "bicubic", "nearest")

# ----------------------------------------------------------------------------- filtering


def _fast_len(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3, 5, 7 (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflect padding; replicate when a side is too small to reflect (frames <= p pixels)."""
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


def filter2d(x: torch.Tensor, kernels: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Correlate frame i of ``x`` (N, C, H, W) with ``kernels[i]`` (N, k, k), k odd; one kernel
    (1, k, k) or (k, k) is shared by all frames. Reflect padding of k//2 keeps the size.

    ``method``: ``direct`` (grouped convolution), ``fft`` or ``auto`` (fft when the frames are
    large). Both give the same values up to float rounding.
    """
    if kernels.dim() == 2:
        kernels = kernels[None]
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    if k % 2 != 1 or kernels.shape[-2] != k:
        raise ValueError(f"kernels must be square with an odd size, got {tuple(kernels.shape)}")
    if kernels.shape[0] == 1 and n != 1:
        kernels = kernels.expand(n, k, k)
    if kernels.shape[0] != n:
        raise ValueError(f"{kernels.shape[0]} kernels for {n} frames")
    kernels = kernels.to(device=x.device, dtype=x.dtype)
    p = k // 2
    xp = _pad(x, p)
    if method == "auto":
        method = "fft" if h * w >= 128 * 128 and k >= 9 else "direct"
    if method == "direct":
        weight = kernels[:, None].expand(n, c, k, k).reshape(n * c, 1, k, k)
        out = F.conv2d(xp.reshape(1, n * c, h + 2 * p, w + 2 * p), weight, groups=n * c)
        return out.view(n, c, h, w)
    if method != "fft":
        raise ValueError(f"unknown filter method {method!r}")
    hp, wp = h + 2 * p, w + 2 * p
    fh, fw = _fast_len(hp), _fast_len(wp)
    # circular correlation of the padded frame with the kernel: no wrap-around reaches the
    # h x w valid part because fh >= hp and fw >= wp.
    spec_x = torch.fft.rfft2(xp.float(), s=(fh, fw))
    spec_k = torch.fft.rfft2(kernels.float(), s=(fh, fw))
    out = torch.fft.irfft2(spec_x * spec_k.conj()[:, None], s=(fh, fw))
    return out[..., :h, :w].to(x.dtype).contiguous()


# ----------------------------------------------------------------------------- noise


def to_device(t: torch.Tensor, device, dtype=None) -> torch.Tensor:
    """A small tensor made on the CPU (drawn values, kernels, tables) on ``device``, the same
    values; to a GPU through pinned memory without waiting for it, so the training step that
    degrades its clip queues its GPU work without a host synchronisation."""
    t = t if dtype is None else t.to(dtype=dtype)
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _per_frame(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return to_device(v, x.device, x.dtype).view(-1, 1, 1, 1)


def gaussian_noise(x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor,
                   gen: torch.Generator, shared_gray: bool = True,
                   clip: bool = True) -> torch.Tensor:
    """Add Gaussian noise of std ``sigma[i]`` (in [0,1] units) to frame i.

    Frames with ``gray[i]`` get noise equal on the three channels. With ``shared_gray`` the gray
    noise is one H x W field for all frames (scaled by each frame's σ), as the release does;
    otherwise each frame draws its own. ``gen`` must live on ``x``'s device.
    """
    n, _, h, w = x.shape
    s = _per_frame(sigma, x)
    g = _per_frame(gray.float(), x)
    colour = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    field_shape = (1, 1, h, w) if shared_gray else (n, 1, h, w)
    field = torch.randn(field_shape, generator=gen, device=x.device, dtype=x.dtype)
    noise = (colour * (1 - g) + field * g) * s
    out = x + noise
    return out.clamp(0, 1) if clip else out


def _levels(q: torch.Tensor) -> torch.Tensor:
    """Per frame: 2^ceil(log2(number of distinct 8-bit values)) of integer tensor q (N, ...)."""
    n = q.shape[0]
    flat = (q.reshape(n, -1).long() + 256 * torch.arange(n, device=q.device)[:, None]).reshape(-1)
    counts = torch.bincount(flat, minlength=256 * n).view(n, 256)
    distinct = (counts > 0).sum(1).clamp_min(1).double()
    return torch.exp2(torch.ceil(torch.log2(distinct)))


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (N, 1, H, W), the weights of torchvision's rgb_to_grayscale."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def poisson_noise(x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor,
                  gen: torch.Generator, clip: bool = True) -> torch.Tensor:
    """Real-ESRGAN Poisson noise: with v = 2^ceil(log2(#distinct 8-bit values of the frame)),
    noise = (Poisson(v·x8) / v − x8)·scale, on the luma for ``gray`` frames (same on all
    channels), per channel otherwise; x8 = x rounded to 8-bit levels."""
    x8 = (x * 255).round().clamp(0, 255)
    vals = _levels(x8).to(x.dtype).view(-1, 1, 1, 1)
    x8 = x8 / 255
    noise = torch.poisson(x8 * vals, generator=gen) / vals - x8
    lum8 = (rgb_to_luma(x) * 255).round().clamp(0, 255)
    vals_g = _levels(lum8).to(x.dtype).view(-1, 1, 1, 1)
    lum8 = lum8 / 255
    noise_g = torch.poisson(lum8 * vals_g, generator=gen) / vals_g - lum8
    g = _per_frame(gray.float(), x)
    noise = noise * (1 - g) + noise_g * g
    out = x + noise * _per_frame(scale, x)
    return out.clamp(0, 1) if clip else out


# ----------------------------------------------------------------------------- JPEG

_LUMA_TABLE = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]]
_CHROMA_CORNER = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def jpeg_tables(device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) 8x8 quantisation tables in the layout the DCT below indexes as
    [vertical frequency, horizontal frequency]. Like the release's DiffJPEG, the standard
    (Annex K) luminance table is applied transposed."""
    luma = torch.tensor(_LUMA_TABLE, dtype=dtype).t().contiguous()
    chroma = torch.full((8, 8), 99.0, dtype=dtype)
    chroma[:4, :4] = torch.tensor(_CHROMA_CORNER, dtype=dtype).t()
    if device is None:
        return luma, chroma
    return to_device(luma, device), to_device(chroma, device)


def quality_to_scale(quality: torch.Tensor) -> torch.Tensor:
    """Standard (IJG) mapping: q < 50 -> 50/q, else (200 - 2q)/100."""
    q = quality.double()
    return torch.where(q < 50, 50.0 / q, (200.0 - 2.0 * q) / 100.0)


def _dct_matrix(device, dtype) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix C (C @ block @ C.T is the 2-D DCT)."""
    k = torch.arange(8, dtype=torch.float64)
    c = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    c[0] /= math.sqrt(2)
    return to_device(c, device, dtype)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H/8, W/8, 64): each 8x8 block flattened row-major."""
    n, h, w = x.shape
    return x.view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(n, h // 8, w // 8, 64)


def _unblocks(b: torch.Tensor) -> torch.Tensor:
    n, bh, bw = b.shape[:3]
    return b.view(n, bh, bw, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def _code_plane(plane: torch.Tensor, table: torch.Tensor, scale: torch.Tensor,
                cmat: torch.Tensor) -> torch.Tensor:
    """DCT, quantise with table*scale (per frame), round, dequantise, inverse DCT.

    The 2-D DCT of a row-major flattened block is one matrix product with kron(C, C)."""
    basis = torch.kron(cmat, cmat)  # [8u+v, 8x+y] = C[u,x] C[v,y]
    coef = _blocks(plane - 128.0) @ basis.t()
    # libjpeg keeps every quantisation step >= 1; this changes nothing for q <= 95 and makes
    # q = 100 (scale 0) a fine quantiser instead of a division by zero
    step = (table.reshape(64) * scale.view(-1, 1, 1, 1)).clamp_min(1.0)
    coef = torch.round(coef / step) * step
    return _unblocks(coef @ basis) + 128.0


def jpeg(x: torch.Tensor, quality: torch.Tensor, pad: str = "zero") -> torch.Tensor:
    """JPEG compress-decompress each frame of ``x`` (N, 3, H, W) in [0,1] at ``quality[i]``
    (float, 1..100). Frames are padded to multiples of 16 (``zero``: black, as the release's
    DiffJPEG; ``replicate``: edge pixels, as real encoders) and cropped back. Output clamped
    to [0,1]; not rounded to 8 bits."""
    n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"jpeg expects 3 channels, got {c}")
    quality = torch.as_tensor(quality, dtype=torch.float64).reshape(-1)
    if quality.numel() == 1 and n != 1:
        quality = quality.expand(n)
    if ((quality < 1) | (quality > 100)).any():
        raise ValueError("JPEG quality must lie in [1, 100]")
    ph, pw = (-h) % 16, (-w) % 16
    work = x.float()
    if ph or pw:
        if pad == "zero":
            work = F.pad(work, (0, pw, 0, ph), mode="constant", value=0.0)
        elif pad == "replicate":
            work = F.pad(work, (0, pw, 0, ph), mode="replicate")
        else:
            raise ValueError(f"jpeg pad must be 'zero' or 'replicate', got {pad!r}")
    img = work * 255.0
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
    cb = F.avg_pool2d(cb[:, None], 2)[:, 0]
    cr = F.avg_pool2d(cr[:, None], 2)[:, 0]
    luma_t, chroma_t = jpeg_tables(x.device)
    scale = to_device(quality_to_scale(quality), x.device, torch.float32)
    cmat = _dct_matrix(x.device, torch.float32)
    y = _code_plane(y, luma_t, scale, cmat)
    cb = _code_plane(cb, chroma_t, scale, cmat)
    cr = _code_plane(cr, chroma_t, scale, cmat)
    cb = cb.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) - 128.0
    cr = cr.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) - 128.0
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    out = (out.clamp(0, 255) / 255.0)[..., :h, :w]
    return out.to(x.dtype).contiguous()


# ----------------------------------------------------------------------------- resize etc.


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``F.interpolate`` to (h, w) with the release's settings (no antialias, corners not
    aligned); a same-size call returns ``x``."""
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode not in INTERP_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; choose from {INTERP_MODES}")
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=size, mode=mode, **kw)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """clamp(round(255 x), 0, 255) / 255."""
    return (x * 255.0).round().clamp(0, 255) / 255.0


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma copied to the three channels."""
    return rgb_to_luma(x).expand_as(x).contiguous()


def color_jitter(x: torch.Tensor, gen: torch.Generator, brightness, contrast, saturation, hue
                 ) -> torch.Tensor:
    """torchvision-style colour jitter in a random order, one factor of each kind for all of
    ``x`` (the release's per-clip jitter). A range of ``None`` skips that adjustment."""
    order = torch.randperm(4, generator=gen).tolist()
    draws = [float(torch.empty(1, dtype=torch.float64).uniform_(0, 1, generator=gen))
             for _ in range(4)]
    for i in order:
        rng_ = (brightness, contrast, saturation, hue)[i]
        if rng_ is None:
            continue
        f = rng_[0] + (rng_[1] - rng_[0]) * draws[i]
        if i == 0:
            x = TF.adjust_brightness(x, f)
        elif i == 1:
            x = TF.adjust_contrast(x, f)
        elif i == 2:
            x = TF.adjust_saturation(x, f)
        else:
            x = TF.adjust_hue(x, f)
    return x


def uniform(n: int, rng_, gen: torch.Generator) -> torch.Tensor:
    """n draws from U(lo, hi), float64, on the CPU generator ``gen``."""
    lo, hi = float(rng_[0]), float(rng_[1])
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def bernoulli(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64) < float(p)


def device_generator(gen: torch.Generator, device) -> torch.Generator:
    """A generator on ``device`` seeded from the CPU generator ``gen`` (noise fields are drawn
    where the frames are)."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen))
    return torch.Generator(device=torch.device(device)).manual_seed(seed)

