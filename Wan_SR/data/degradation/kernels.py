"""Blur kernel families of the Real-ESRGAN degradation, written with torch.

Every kernel lives on a ``pad x pad`` grid (odd ``pad``, 21 in the release) centred on the middle
pixel; a kernel of size ``s < pad`` is the ``s x s`` centre window of that grid, zero outside, which
is exactly the release's "build at size s, then zero-pad to 21". All kernels sum to 1.

With ``d = (x, y)`` the offset from the centre (x along the width, y along the height) and
``Σ = R(θ) diag(σx², σy²) R(θ)ᵀ``, ``Q = dᵀ Σ⁻¹ d``:

- Gaussian (``iso``: σy = σx, θ = 0; ``aniso``): ``exp(-Q / 2)``
- generalized Gaussian (``generalized_iso`` / ``generalized_aniso``): ``exp(-(Q^β) / 2)``
- plateau (``plateau_iso`` / ``plateau_aniso``): ``1 / (1 + Q^β)``
- sinc (circular low-pass with cut-off ω): ``ω J1(ω r) / (2π r)``, centre ``ω² / (4π)``
- pulse: 1 at the centre (no blur)

:func:`random_kernels` draws one kernel per frame from the YAML distribution (sizes, families,
σ, θ, β, ω) with a ``torch.Generator``; the per-frame parameters are drawn on the CPU and the
kernels are returned as float32 on the requested device.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

FAMILIES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
            "plateau_aniso")
# internal codes for the batched builder
_GAUSS, _GENERAL, _PLATEAU, _SINC, _PULSE = 0, 1, 2, 3, 4
_FAMILY_CODE = {"iso": _GAUSS, "aniso": _GAUSS, "generalized_iso": _GENERAL,
                "generalized_aniso": _GENERAL, "plateau_iso": _PLATEAU,
                "plateau_aniso": _PLATEAU}


def _grid(pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (varies along columns) and y (along rows) offsets of a ``pad x pad`` grid, float64."""
    if pad % 2 != 1 or pad < 1:
        raise ValueError(f"kernel grid size must be odd and positive, got {pad}")
    ax = torch.arange(pad, dtype=torch.float64) - (pad - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def build_kernels(code: torch.Tensor, size: torch.Tensor, sigma_x: torch.Tensor,
                  sigma_y: torch.Tensor, theta: torch.Tensor, beta: torch.Tensor,
                  omega: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched kernels, float64 (N, pad, pad), each summing to 1.

    All arguments are 1-D tensors of length N (unused entries are ignored for a family):
    ``code`` in {0 Gaussian, 1 generalized, 2 plateau, 3 sinc, 4 pulse}, ``size`` the odd support
    (<= pad), σx, σy, θ (radians), β, ω (sinc cut-off, radians per pixel).
    """
    xx, yy = _grid(pad)
    n = code.shape[0]
    f64 = dict(dtype=torch.float64)
    sx, sy = sigma_x.to(**f64).view(n, 1, 1), sigma_y.to(**f64).view(n, 1, 1)
    th = theta.to(**f64).view(n, 1, 1)
    c, s = torch.cos(th), torch.sin(th)
    # Σ⁻¹ = R diag(1/σx², 1/σy²) Rᵀ  ->  Q = a x² + 2 b x y + d y²
    ia, ib = 1.0 / sx ** 2, 1.0 / sy ** 2
    a = c * c * ia + s * s * ib
    b = c * s * (ia - ib)
    d = s * s * ia + c * c * ib
    q = a * xx ** 2 + 2 * b * xx * yy + d * yy ** 2
    q = q.clamp_min(0)
    be = beta.to(**f64).view(n, 1, 1)
    gauss = torch.exp(-0.5 * q)
    general = torch.exp(-0.5 * q.pow(be))
    plateau = 1.0 / (1.0 + q.pow(be))
    om = omega.to(**f64).view(n, 1, 1)
    r = torch.sqrt(xx ** 2 + yy ** 2).expand(n, pad, pad)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    sinc = om * torch.special.bessel_j1(om * safe_r) / (2 * math.pi * safe_r)
    sinc = torch.where(r > 0, sinc, (om ** 2 / (4 * math.pi)).expand(n, pad, pad))
    pulse = ((xx == 0) & (yy == 0)).to(torch.float64).expand(n, pad, pad)
    cd = code.view(n, 1, 1)
    k = torch.where(cd == _GAUSS, gauss, torch.where(cd == _GENERAL, general, torch.where(
        cd == _PLATEAU, plateau, torch.where(cd == _SINC, sinc, pulse))))
    half = (size.to(torch.float64).view(n, 1, 1) - 1) / 2
    inside = (xx.abs() <= half) & (yy.abs() <= half)
    k = k * inside
    return k / k.sum(dim=(1, 2), keepdim=True)


def _one(code, size, pad, sigma_x=1.0, sigma_y=None, theta=0.0, beta=1.0, omega=math.pi):
    t = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    sigma_y = sigma_x if sigma_y is None else sigma_y
    pad = size if pad is None else pad
    if size % 2 != 1 or size > pad:
        raise ValueError(f"kernel size must be odd and <= the grid size {pad}, got {size}")
    return build_kernels(torch.tensor([code]), torch.tensor([size]), t(sigma_x), t(sigma_y),
                         t(theta), t(beta), t(omega), pad)[0]


def gaussian_kernel(size: int, sigma_x: float, sigma_y: Optional[float] = None,
                    theta: float = 0.0, pad_to: Optional[int] = None) -> torch.Tensor:
    """(An)isotropic Gaussian kernel, float64 (pad_to or size)²; isotropic when σy is None."""
    return _one(_GAUSS, size, pad_to, sigma_x, sigma_y, theta)


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: Optional[float] = None,
                                theta: float = 0.0, beta: float = 1.0,
                                pad_to: Optional[int] = None) -> torch.Tensor:
    return _one(_GENERAL, size, pad_to, sigma_x, sigma_y, theta, beta)


def plateau_kernel(size: int, sigma_x: float, sigma_y: Optional[float] = None,
                   theta: float = 0.0, beta: float = 1.0,
                   pad_to: Optional[int] = None) -> torch.Tensor:
    return _one(_PLATEAU, size, pad_to, sigma_x, sigma_y, theta, beta)


def sinc_kernel(size: int, omega: float, pad_to: Optional[int] = None) -> torch.Tensor:
    """Circular low-pass kernel ω J1(ω r) / (2π r), normalised to sum 1."""
    return _one(_SINC, size, pad_to, omega=omega)


def pulse_kernel(size: int) -> torch.Tensor:
    return _one(_PULSE, size, None)


# ---------------------------------------------------------------------------- random draws


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _choice(n: int, values: Sequence, gen: torch.Generator, probs=None) -> torch.Tensor:
    """Indices into ``values`` (uniform, or with ``probs``)."""
    if probs is None:
        return torch.randint(len(values), (n,), generator=gen)
    p = torch.tensor([float(v) for v in probs], dtype=torch.float64)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)


def _two_sided(n: int, rng_: Sequence[float], gen: torch.Generator) -> torch.Tensor:
    """β as in basicsr: with prob ½ from U(lo, 1), else from U(1, hi)."""
    lo, hi = float(rng_[0]), float(rng_[1])
    low = _uniform(n, lo, 1.0, gen)
    high = _uniform(n, 1.0, hi, gen)
    pick = torch.rand(n, generator=gen, dtype=torch.float64) < 0.5
    return torch.where(pick, low, high)


def random_blur_kernels(n: int, gen: torch.Generator, *, sizes: Sequence[int],
                        kernel_list: Sequence[str], kernel_prob: Sequence[float],
                        sigma_range: Sequence[float], betag_range: Sequence[float],
                        betap_range: Sequence[float], sinc_prob: float, pad: int
                        ) -> torch.Tensor:
    """One blur kernel per frame (first or second blur), float64 (n, pad, pad).

    Per frame: a size from ``sizes``; with ``sinc_prob`` a sinc kernel with ω ~ U(π/3, π) for
    sizes < 13 else U(π/5, π); otherwise a family from ``kernel_list`` with ``kernel_prob``,
    σx, σy ~ U(sigma_range) (σy = σx and θ = 0 for the isotropic families), θ ~ U(-π, π), β from
    ``betag_range`` / ``betap_range`` (with prob ½ below 1, else above 1).
    """
    size = torch.tensor([int(s) for s in sizes])[_choice(n, sizes, gen)]
    is_sinc = torch.rand(n, generator=gen, dtype=torch.float64) < float(sinc_prob)
    om_small = _uniform(n, math.pi / 3, math.pi, gen)
    om_large = _uniform(n, math.pi / 5, math.pi, gen)
    omega = torch.where(size < 13, om_small, om_large)
    fam = _choice(n, kernel_list, gen, kernel_prob)
    fam_code = torch.tensor([_FAMILY_CODE[k] for k in kernel_list])[fam]
    iso = torch.tensor([k.endswith("iso") and not k.endswith("aniso") for k in kernel_list])[fam]
    sx = _uniform(n, sigma_range[0], sigma_range[1], gen)
    sy = _uniform(n, sigma_range[0], sigma_range[1], gen)
    th = _uniform(n, -math.pi, math.pi, gen)
    bg = _two_sided(n, betag_range, gen)
    bp = _two_sided(n, betap_range, gen)
    sy = torch.where(iso, sx, sy)
    th = torch.where(iso, torch.zeros_like(th), th)
    beta = torch.where(fam_code == _PLATEAU, bp, bg)
    code = torch.where(is_sinc, torch.full_like(fam_code, _SINC), fam_code)
    return build_kernels(code, size, sx, sy, th, beta, omega, pad)


def random_final_kernels(n: int, gen: torch.Generator, *, sizes: Sequence[int],
                         final_sinc_prob: float, pad: int) -> torch.Tensor:
    """Final-stage kernel per frame: with ``final_sinc_prob`` a sinc (size from ``sizes``,
    ω ~ U(π/3, π)), else a pulse (identity)."""
    size = torch.tensor([int(s) for s in sizes])[_choice(n, sizes, gen)]
    omega = _uniform(n, math.pi / 3, math.pi, gen)
    is_sinc = torch.rand(n, generator=gen, dtype=torch.float64) < float(final_sinc_prob)
    code = torch.where(is_sinc, torch.full((n,), _SINC), torch.full((n,), _PULSE))
    one = torch.ones(n, dtype=torch.float64)
    return build_kernels(code, size, one, one, 0 * one, one, omega, pad)
