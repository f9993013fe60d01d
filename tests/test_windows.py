"""Sliding windows and blending (docs/method.md §6): Wan_SR/core/windows.py."""
import numpy as np
import pytest
import torch

from Wan_SR.core.windows import (SpatialAccumulator, TemporalBlender, iter_windows, ramp_1d,
                                     run_tiled, tile_boxes, tile_weight, window_starts)


@pytest.mark.parametrize("length, window, overlap, expected", [
    (10, 33, 16, [0]),                    # shorter than the window: one window
    (33, 33, 16, [0]),                    # exactly one window
    (67, 33, 16, [0, 17, 34]),            # stride 17 lands exactly on length - window
    (100, 33, 16, [0, 17, 34, 51, 67]),   # last start forced to 100 - 33
    (49, 33, 16, [0, 16]),                # forced start closer than one stride
    (50, 33, 17, [0, 16, 17]),            # forced start one frame after the previous one
    (100, 33, 8, [0, 25, 50, 67]),        # step 2 temporal overlap
    (720, 720, 128, [0]),                 # 720p height: one tile
    (1920, 1280, 128, [0, 640]),          # 1080p width: two tiles
    (5, 4, 0, [0, 1]),                    # no overlap, forced last start
])
def test_window_starts(length, window, overlap, expected):
    assert window_starts(length, window, overlap) == expected


def test_window_starts_rejects_bad_arguments():
    with pytest.raises(ValueError):
        window_starts(0, 33, 16)
    with pytest.raises(ValueError):
        window_starts(100, 33, 33)
    with pytest.raises(ValueError):
        window_starts(100, 0, 0)


def test_iter_windows_counts():
    assert list(iter_windows(10, 33, 16)) == [(0, 10)]
    assert list(iter_windows(100, 33, 16)) == [(0, 33), (17, 33), (34, 33), (51, 33), (67, 33)]


def test_ramp_1d_values():
    r = 1e-6 + (1 - 1e-6) / 2  # middle of linspace(1e-6, 1, 3)
    assert torch.allclose(ramp_1d(8, 3), torch.tensor([1e-6, r, 1, 1, 1, 1, r, 1e-6]),
                          rtol=0, atol=1e-7)
    # ov = min(overlap, size // 2) = 2
    assert torch.allclose(ramp_1d(5, 4), torch.tensor([1e-6, 1, 1, 1, 1e-6]), rtol=0, atol=1e-7)
    assert torch.equal(ramp_1d(4, 0), torch.ones(4))


def test_tile_weight_is_outer_product():
    rows = [1e-6, 1, 1, 1e-6]                        # ramp_1d(4, 2)
    r = 1e-6 + (1 - 1e-6) / 2
    cols = [1e-6, r, 1, 1, r, 1e-6]                 # ramp_1d(6, 3)
    expected = torch.tensor([[a * b for b in cols] for a in rows])
    w = tile_weight(4, 6, 2, 3)
    assert w.shape == (4, 6)
    assert torch.allclose(w, expected, rtol=1e-6, atol=1e-12)


def test_tile_boxes():
    assert tile_boxes(720, 1920, 720, 1280, 128, 128) == [(0, 0, 720, 1280), (0, 640, 720, 1280)]
    assert tile_boxes(100, 200, 720, 1280, 128, 128) == [(0, 0, 100, 200)]  # smaller: one tile
    assert tile_boxes(1080, 1280, 720, 1280, 128, 128) == [(0, 0, 720, 1280), (360, 0, 720, 1280)]


def test_spatial_accumulator_weighted_mean():
    acc = SpatialAccumulator((1, 4, 6), overlap_h=0, overlap_w=2)
    a, b = torch.full((1, 4, 4), 2.0), torch.full((1, 4, 4), 5.0)
    acc.add(a, 0, 0)   # columns 0..3, weights [1e-6, 1, 1, 1e-6]
    acc.add(b, 0, 2)   # columns 2..5, same weights
    out = acc.result()[0, 0]
    # column 2: (2*1 + 5*1e-6) / (1 + 1e-6); column 3: (2*1e-6 + 5*1) / (1e-6 + 1)
    expected = torch.tensor([2.0, 2.0, (2 + 5e-6) / (1 + 1e-6), (2e-6 + 5) / (1 + 1e-6), 5.0, 5.0])
    assert torch.allclose(out, expected, atol=1e-5)


def test_run_tiled():
    x = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0))
    # one tile: exactly fn(x)
    assert torch.equal(run_tiled(lambda v: v * 2, x, window_h=64, window_w=80, overlap_h=8,
                                 overlap_w=8), x * 2)
    # several tiles of a pointwise function: blending reproduces fn(x)
    calls = []

    def fn(v, w):
        calls.append(tuple(v.shape[-2:]))
        return v + w

    out = run_tiled(fn, x, x, window_h=32, window_w=32, overlap_h=8, overlap_w=8)
    assert len(calls) == len(tile_boxes(50, 70, 32, 32, 8, 8)) == 2 * 3
    assert set(calls) == {(32, 32)}
    assert torch.allclose(out, 2 * x, atol=1e-5)


def _reference_blend(windows, starts, length):
    """Direct, non-streaming docs/method.md §6 temporal blend in numpy float64."""
    out = np.zeros((length,) + windows[0].shape[1:])
    end = 0
    for s, w in zip(starts, windows):
        o = max(0, end - s)
        a = np.linspace(0, 1, o).reshape((-1,) + (1,) * (w.ndim - 1))
        out[s:s + o] = out[s:s + o] * (1 - a) + w[:o] * a
        out[s + o:s + len(w)] = w[o:]
        end = s + len(w)
    return out


@pytest.mark.parametrize("length, window, overlap", [(20, 8, 3), (100, 33, 16), (10, 33, 8),
                                                     (41, 33, 8)])
def test_temporal_blender_matches_reference_and_streams(length, window, overlap):
    rng = np.random.default_rng(length)
    count = min(window, length)
    starts = window_starts(length, count, overlap)
    windows = [rng.random((count, 2, 3)) for _ in starts]
    blender = TemporalBlender(starts, length)
    pieces = [blender.add(torch.from_numpy(w).float()) for w in windows]
    assert blender.flush().numel() == 0
    got = torch.cat(pieces).double().numpy()
    assert got.shape[0] == length
    np.testing.assert_allclose(got, _reference_blend(windows, starts, length), atol=1e-6)
    # streaming: each window hands out the frames no later window touches
    sizes = [p.shape[0] for p in pieces]
    assert sizes == [b - a for a, b in zip(starts, starts[1:] + [length])]
    if len(starts) > 1:
        assert sizes[0] > 0  # frames returned before the last window was added


def test_temporal_blender_crossfade_values():
    # two windows of 4 frames overlapping by 2: frames 2, 3 are prev*(1-a) + cur*a, a = [0, 1]
    blender = TemporalBlender([0, 2], 6)
    first = blender.add(torch.zeros(4, 1))
    second = blender.add(torch.ones(4, 1))
    assert first.flatten().tolist() == [0, 0]
    assert second.flatten().tolist() == [0, 1, 1, 1]
    # overlap 3: a = [0, .5, 1]
    blender = TemporalBlender([0, 1], 5)
    out = torch.cat([blender.add(torch.zeros(4, 1)), blender.add(torch.full((4, 1), 2.0))])
    assert out.flatten().tolist() == [0, 0, 1, 2, 2]
