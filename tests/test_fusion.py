"""Frequency-domain update (docs/method.md §7): Wan_SR/fusion/frequency.py."""
import math

import pytest
import torch

from Wan_SR.fusion.frequency import (butterworth_lowpass_mask, fuse_frames, fuse_luma, fuse_video,
                                     luma, luma_split, lowpass, rgb_to_yuv, yuv_to_rgb)
from Wan_SR.core.windows import tile_boxes

H, W, T = 64, 96, 2


def _grid():
    return torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")


def _smooth(phase: float, amp: float = 0.15) -> torch.Tensor:
    """A periodic low-frequency plane (no wrap-around edge for the FFT)."""
    yy, xx = _grid()
    return 0.5 + amp * torch.sin(2 * math.pi * (2 * xx / W + phase)) * torch.cos(
        2 * math.pi * (yy / H + phase))


def _pair(seed: int = 0):
    """consistent: smooth base A + faint detail; sharp: another smooth base B + strong detail."""
    g = torch.Generator().manual_seed(seed)
    detail = torch.rand(T, 3, H, W, generator=g) - 0.5
    base_c = torch.stack([_smooth(0.0), _smooth(0.1), _smooth(0.2)])[None].repeat(T, 1, 1, 1)
    base_s = torch.stack([_smooth(0.3), _smooth(0.4), _smooth(0.5)])[None].repeat(T, 1, 1, 1)
    c = (base_c + 0.05 * detail).clamp(0, 1)
    s = (base_s + 0.2 * torch.roll(detail, 1, -1)).clamp(0, 1)
    return c, s


def _spec_lowpass(y, fc=0.20, order=2):
    """docs/method.md §7 step 3 written literally: fft2 (ortho), fftshift, mask, ifftshift, ifft2, real."""
    h, w = y.shape[-2:]
    u = torch.linspace(-0.5, 0.5, w, dtype=torch.float64)
    v = torch.linspace(-0.5, 0.5, h, dtype=torch.float64)
    r = torch.sqrt(u[None, :] ** 2 + v[:, None] ** 2)
    mask = 1 / (1 + (r / fc) ** (2 * order))
    spec = torch.fft.fftshift(torch.fft.fft2(y.double(), norm="ortho"), dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(spec * mask, dim=(-2, -1)), norm="ortho").real


def _spec_fuse(c, s, fc=0.20, alpha=0.6, border=2, order=2, eps=1e-6):
    """docs/method.md §7 steps 1-5 written literally in float64, as the reference."""
    c, s = c.double(), s.double()
    yc = 0.299 * c[:, 0] + 0.587 * c[:, 1] + 0.114 * c[:, 2]
    uc = -0.14713 * c[:, 0] - 0.28886 * c[:, 1] + 0.436 * c[:, 2]
    vc = 0.615 * c[:, 0] - 0.51499 * c[:, 1] - 0.10001 * c[:, 2]
    ys = 0.299 * s[:, 0] + 0.587 * s[:, 1] + 0.114 * s[:, 2]
    lc, ls = _spec_lowpass(yc, fc, order), _spec_lowpass(ys, fc, order)
    hc, hs = yc - lc, ys - ls
    w = hs.abs() / (hs.abs() + hc.abs() + eps)
    y = lc + alpha * (w * hs + (1 - w) * hc)
    y[:, :border, :] = yc[:, :border, :]
    y[:, -border:, :] = yc[:, -border:, :]
    y[:, :, :border] = yc[:, :, :border]
    y[:, :, -border:] = yc[:, :, -border:]
    rgb = torch.stack([y + 1.13983 * vc, y - 0.39465 * uc - 0.5806 * vc, y + 2.03211 * uc], 1)
    return rgb.clamp(0, 1)


INTERIOR = (slice(None), slice(4, -4), slice(4, -4))  # 4 pixels away from the frame edge


# --- colour conversion -------------------------------------------------------------------------

def test_yuv_coefficients():
    px = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(3, 3, 1, 1)
    yuv = rgb_to_yuv(px)[..., 0, 0]
    expected = torch.tensor([[0.299, -0.14713, 0.615],
                             [0.587, -0.28886, -0.51499],
                             [0.114, 0.436, -0.10001]])
    assert torch.allclose(yuv, expected, atol=1e-7)
    # inverse: Y=0.5, U=0.1, V=-0.2 -> R = .5 - .227966, G = .5 - .039465 + .11612, B = .5 + .203211
    rgb = yuv_to_rgb(torch.tensor([0.5, 0.1, -0.2]).view(1, 3, 1, 1))[0, :, 0, 0]
    assert torch.allclose(rgb, torch.tensor([0.272034, 0.576655, 0.703211]), atol=1e-6)


def test_yuv_round_trip():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    # the inverse coefficients are the usual rounded ones: the round trip is within 1e-4
    assert (yuv_to_rgb(rgb_to_yuv(x)) - x).abs().max() < 1e-4
    assert torch.allclose(luma(x), rgb_to_yuv(x)[:, 0])


# --- Butterworth mask and the luma split --------------------------------------------------------

def test_butterworth_mask_4x4_by_hand():
    # u = v = linspace(-.5, .5, 4) = [-1/2, -1/6, 1/6, 1/2]; fc = 1/5, order 2:
    # mask = 1 / (1 + (r^2 * 25)^2)
    #   r^2 = 1/2        -> 1 / (1 + 12.5^2)       = 4/629
    #   r^2 = 1/4 + 1/36 -> 1 / (1 + (125/18)^2)   = 324/15949
    #   r^2 = 1/18       -> 1 / (1 + (25/18)^2)    = 324/949
    a, b, c = 4 / 629, 324 / 15949, 324 / 949
    expected = torch.tensor([[a, b, b, a],
                             [b, c, c, b],
                             [b, c, c, b],
                             [a, b, b, a]])
    mask = butterworth_lowpass_mask(4, 4, fc=0.20, order=2)
    assert mask.dtype == torch.float32 and mask.shape == (4, 4)
    assert torch.allclose(mask, expected, rtol=1e-6, atol=0)


def test_butterworth_mask_non_square_order_1():
    # H=2, W=3, fc=1/2, order 1: u = [-1/2, 0, 1/2], v = [-1/2, 1/2];
    # mask = 1 / (1 + r^2 * 4): r^2 = 1/2 -> 1/3, r^2 = 1/4 -> 1/2
    expected = torch.tensor([[1 / 3, 1 / 2, 1 / 3], [1 / 3, 1 / 2, 1 / 3]])
    mask = butterworth_lowpass_mask(2, 3, fc=0.5, order=1)
    assert mask.shape == (2, 3)
    assert torch.allclose(mask, expected, rtol=1e-6, atol=0)


def test_mask_is_cached():
    assert butterworth_lowpass_mask(8, 12, 0.2, 2) is butterworth_lowpass_mask(8, 12, 0.2, 2)
    assert butterworth_lowpass_mask(8, 12, 0.2, 2) is not butterworth_lowpass_mask(8, 12, 0.3, 2)


@pytest.mark.parametrize("shape", [(16, 16), (15, 22), (33, 64), (7, 9)])
def test_lowpass_matches_spec_formula(shape):
    # the real-FFT implementation must give the literal fft2/fftshift numbers (odd sizes too)
    y = torch.rand(3, *shape, generator=torch.Generator().manual_seed(2))
    low, high = luma_split(y, 0.2, 2)
    ref = _spec_lowpass(y, 0.2, 2)
    assert (low.double() - ref).abs().max() < 1e-6
    assert torch.allclose(low + high, y, atol=1e-6)
    assert (lowpass(y, 0.35, 3).double() - _spec_lowpass(y, 0.35, 3)).abs().max() < 1e-6


# --- the update rule ----------------------------------------------------------------------------

def test_fuse_frames_matches_literal_spec():
    c, s = _pair()
    for alpha in (0.0, 0.6, 1.0):
        out = fuse_frames(c, s, alpha=alpha)
        ref = _spec_fuse(c, s, alpha=alpha)
        assert out.dtype == torch.float32 and out.shape == c.shape
        assert (out.double() - ref).abs().max() < 1e-5


def test_fuse_with_itself_returns_input():
    c, _ = _pair()
    out = fuse_frames(c, c, alpha=1.0)
    assert (out - c).abs().max() < 1 / 255
    # with alpha < 1 the shared detail is scaled by alpha: Y = L + alpha * Hf (docs/method.md §7 step 4)
    y = luma(c)
    low, high = luma_split(y)
    y_out = fuse_luma(y, y, alpha=0.6, border=0)
    assert (y_out - (low + 0.6 * high)).abs().max() < 1e-6


def test_alpha_zero_gives_consistent_low_band():
    c, s = _pair()
    y_c, y_s = luma(c), luma(s)
    low_c, _ = luma_split(y_c)
    y_out = fuse_luma(y_c, y_s, alpha=0.0, border=2)
    # before clamping, alpha=0 leaves L_c inside (up to float rounding) and Y_c on the border
    assert (y_out[:, 2:-2, 2:-2] - low_c[:, 2:-2, 2:-2]).abs().max() <= 1e-6
    assert (y_out[:, 2:-2, 2:-2] - y_c[:, 2:-2, 2:-2]).abs().max() > 0.02  # L_c is not Y_c
    assert torch.equal(y_out[:, :2], y_c[:, :2]) and torch.equal(y_out[:, :, -2:], y_c[:, :, -2:])
    # and through RGB (values stay inside [0, 1], so the clamp does not act here)
    assert 0.2 < c.min() and c.max() < 0.8
    out_y = luma(fuse_frames(c, s, alpha=0.0))
    assert (out_y[:, 2:-2, 2:-2] - low_c[:, 2:-2, 2:-2]).abs().max() < 1e-4


def test_low_band_follows_consistent():
    # Tolerance: the Butterworth roll-off and the per-pixel weight leak a little energy into low
    # frequencies; at a probe cut-off of 0.05 cycles/pixel the output's low band stays within
    # 3e-3 (< 1/255) of the consistent one, while the sharp one is ~0.06 away on average.
    c, s = _pair()
    y_c, y_s = luma(c), luma(s)
    probe_c, probe_s = lowpass(y_c, 0.05), lowpass(y_s, 0.05)
    assert (probe_s - probe_c)[INTERIOR].abs().mean() > 0.04
    for alpha in (0.0, 0.6, 1.0):
        probe_out = lowpass(luma(fuse_frames(c, s, alpha=alpha)), 0.05)
        assert (probe_out - probe_c)[INTERIOR].abs().max() < 3e-3


def test_high_band_moves_towards_sharp_with_alpha():
    c, s = _pair()
    _, hf_s = luma_split(luma(s))
    energy, distance = [], []
    for alpha in (0.0, 0.3, 0.6, 1.0):
        _, hf_out = luma_split(luma(fuse_frames(c, s, alpha=alpha)))
        energy.append(hf_out[INTERIOR].pow(2).mean().item())
        distance.append((hf_out - hf_s)[INTERIOR].pow(2).mean().item())
    e_s = hf_s[INTERIOR].pow(2).mean().item()
    assert all(a < b for a, b in zip(energy, energy[1:])), energy
    assert all(a > b for a, b in zip(distance, distance[1:])), distance
    assert energy[0] < 0.01 * e_s and 0.5 * e_s < energy[-1] < 1.2 * e_s


def test_border_pixels_come_from_consistent():
    c, s = _pair()
    out = fuse_frames(c, s, alpha=0.6, border=2)
    rt = yuv_to_rgb(rgb_to_yuv(c))  # the colour round trip is the only change on the border
    for region in [(..., slice(0, 2), slice(None)), (..., slice(-2, None), slice(None)),
                   (..., slice(None), slice(0, 2)), (..., slice(None), slice(-2, None))]:
        assert torch.allclose(out[region], rt[region].clamp(0, 1), atol=1e-6)
        assert (out[region] - c[region]).abs().max() < 1e-4
    # the third row/column is fused, not copied
    assert (out[..., 2, 2:-2] - c[..., 2, 2:-2]).abs().mean() > 0.01
    assert (out[..., 2:-2, 2] - c[..., 2:-2, 2]).abs().mean() > 0.01
    out0 = fuse_frames(c, s, alpha=0.6, border=0)
    assert (out0[..., 0, :] - c[..., 0, :]).abs().mean() > 0.01


def test_computes_in_float32_for_half_input():
    c, s = _pair()
    out_half = fuse_frames(c.half(), s.half())
    assert out_half.dtype == torch.float16
    ref = fuse_frames(c.half().float(), s.half().float())
    assert (out_half.float() - ref).abs().max() <= 1e-3  # only the final cast to half differs


def test_shape_mismatch_is_an_error():
    c, s = _pair()
    with pytest.raises(ValueError):
        fuse_frames(c, s[..., :-1])
    with pytest.raises(ValueError):
        fuse_frames(c[:, :2], s[:, :2])


# --- spatial tiles ------------------------------------------------------------------------------

def test_fuse_video_one_tile_is_fuse_frames():
    c, s = _pair()
    assert torch.equal(fuse_video(c, s, alpha=0.6), fuse_frames(c, s, alpha=0.6))


def test_tiled_fusion_matches_untiled_away_from_seams():
    c, s = _pair()
    kw = dict(window_h=64, window_w=40, overlap_h=0, overlap_w=12)
    boxes = tile_boxes(H, W, 64, 40, 0, 12)
    assert [(top, left, th, tw) for top, left, th, tw in boxes] == [
        (0, 0, 64, 40), (0, 28, 64, 40), (0, 56, 64, 40)]  # three tiles across the width
    tiled = fuse_video(c, s, alpha=0.6, **kw)
    whole = fuse_frames(c, s, alpha=0.6)
    # columns at least 8 pixels from every edge of every tile that covers them
    d = 8
    far = torch.ones(W, dtype=torch.bool)
    for _, left, _, tw in boxes:
        cols = torch.arange(W)
        inside = (cols >= left) & (cols < left + tw)
        near = inside & ((cols < left + d) | (cols >= left + tw - d))
        far &= ~near
    assert far.sum() >= 20
    region = (..., slice(d, H - d), far)
    # Tolerance: the Butterworth kernel decays within a few pixels; what is left 8 px from any
    # tile edge is the mask grid differing slightly between a 40- and a 96-wide FFT (~3e-4).
    assert (tiled[region] - whole[region]).abs().max() < 1e-3
    # near the seams the tiles do differ (the check above is not vacuous), but the ramp blend
    # keeps the whole frame within 1e-2 of the untiled fusion
    assert (tiled - whole).abs().max() > 2e-3
    assert (tiled - whole).abs().max() < 1e-2
    assert tiled.min() >= 0 and tiled.max() <= 1
