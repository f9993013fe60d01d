"""Degradation: kernel families against their closed forms, filtering, noise, JPEG, and the
pssr / realesrgan chains (sizes, 8-bit levels, blur, measured noise, probabilities 0/1, seeds)."""
import math

import numpy as np
import pytest
import torch

from Wan_SR.data.degradation import (Degradation, DegradationConfigError, load_config, ops)
from Wan_SR.data.degradation import kernels as K

PSSR = "config/degradation_pssr.yml"
RESRGAN = "config/degradation_realesrgan.yml"


def _quad(x, y, sx, sy, theta):
    """dᵀ Σ⁻¹ d with Σ = R diag(σx², σy²) Rᵀ, built the textbook way (numpy)."""
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = r @ np.diag([sx ** 2, sy ** 2]) @ r.T
    d = np.array([x, y], dtype=np.float64)
    return float(d @ np.linalg.inv(sigma) @ d)


def _j1(x):
    """Bessel J1 from its integral form (1/π)∫₀^π cos(τ − x sin τ) dτ (independent of torch)."""
    tau = np.linspace(0, math.pi, 20001)
    return float(_trapz(np.cos(tau - x * np.sin(tau)), tau) / math.pi)


_trapz = getattr(np, "trapezoid", None) or np.trapz
POINTS = [(1, 0), (0, 2), (-2, 1), (3, -2), (2, 2)]


@pytest.mark.parametrize("family", ["gaussian", "generalized", "plateau"])
@pytest.mark.parametrize("aniso", [False, True])
def test_kernel_family_closed_form(family, aniso):
    sx, sy, th, beta = (1.7, 0.8, 0.6, 1.6) if aniso else (1.3, None, 0.0, 0.7)
    size, pad = 11, 21
    if family == "gaussian":
        k = K.gaussian_kernel(size, sx, sy, th, pad_to=pad)
        f = lambda q: math.exp(-0.5 * q)  # noqa: E731
    elif family == "generalized":
        k = K.generalized_gaussian_kernel(size, sx, sy, th, beta, pad_to=pad)
        f = lambda q: math.exp(-0.5 * q ** beta)  # noqa: E731
    else:
        k = K.plateau_kernel(size, sx, sy, th, beta, pad_to=pad)
        f = lambda q: 1.0 / (1.0 + q ** beta)  # noqa: E731
    assert k.shape == (pad, pad)
    assert abs(float(k.sum()) - 1) < 1e-12
    c = pad // 2
    for x, y in POINTS:  # k[row=y, col=x] relative to the centre
        want = f(_quad(x, y, sx, sy if sy is not None else sx, th)) / f(0.0)
        assert float(k[c + y, c + x] / k[c, c]) == pytest.approx(want, rel=1e-9)
    # zero outside the size x size window, positive inside
    half = size // 2
    assert float(k[: c - half].abs().sum()) == 0 and float(k[:, c + half + 1:].abs().sum()) == 0
    assert float(k[c - half:c + half + 1, c - half:c + half + 1].min()) > 0


def test_sinc_kernel_matches_bessel_closed_form():
    omega, size = 1.9, 13
    k = K.sinc_kernel(size, omega, pad_to=21)
    assert abs(float(k.sum()) - 1) < 1e-12
    c = 10
    centre = omega ** 2 / (4 * math.pi)
    for x, y in POINTS + [(4, 3), (6, 0)]:
        r = math.hypot(x, y)
        want = omega * _j1(omega * r) / (2 * math.pi * r) / centre
        assert float(k[c + y, c + x] / k[c, c]) == pytest.approx(want, rel=1e-6, abs=1e-9)
    # the unnormalised kernel really is ω J1(ω r) / (2π r): the ratios above pin it; also the
    # negative side lobe exists for this cut-off
    assert float(k.min()) < 0
    assert float(k[c, c + 7]) == 0.0  # outside 13x13


def test_pulse_and_random_kernels_sum_to_one():
    p = K.pulse_kernel(21)
    assert float(p[10, 10]) == 1 and float(p.sum()) == 1
    g = torch.Generator().manual_seed(0)
    cfg = load_config(PSSR)
    ks = K.random_blur_kernels(64, g, sizes=cfg.kernel_sizes(), kernel_list=cfg["kernel_list"],
                               kernel_prob=cfg["kernel_prob"], sigma_range=cfg["blur_sigma"],
                               betag_range=cfg["betag_range"], betap_range=cfg["betap_range"],
                               sinc_prob=0.3, pad=21)
    assert ks.shape == (64, 21, 21)
    assert torch.allclose(ks.sum((1, 2)), torch.ones(64, dtype=torch.float64), atol=1e-12)
    assert len({tuple(k.flatten().tolist()) for k in ks}) == 64  # one kernel per frame
    fin = K.random_final_kernels(200, g, sizes=[7, 9, 21], final_sinc_prob=0.0, pad=21)
    assert torch.equal(fin, p.expand(200, 21, 21))
    fin = K.random_final_kernels(50, g, sizes=[7, 21], final_sinc_prob=1.0, pad=21)
    assert (fin[:, 10, 10] < 0.99).all()


def test_filter2d_reflect_per_frame_and_fft_equal_direct():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 20, 26, generator=g)
    ks = torch.stack([K.gaussian_kernel(7, 1.2), K.sinc_kernel(7, 2.0), K.pulse_kernel(7)]).float()
    direct = ops.filter2d(x, ks, method="direct")
    fft = ops.filter2d(x, ks, method="fft")
    assert torch.allclose(direct, fft, atol=1e-5)
    assert torch.equal(direct[2], x[2])  # pulse is the identity
    # closed form at a border pixel: reflect padding, correlation
    xp = np.pad(x[0, 1].numpy().astype(np.float64), 3, mode="reflect")
    want = float((xp[0:7, 0:7] * ks[0].double().numpy()).sum())
    assert float(direct[0, 1, 0, 0]) == pytest.approx(want, abs=1e-5)


def test_jpeg_quality_100_is_near_identity_and_30_shows_blocks():
    g = torch.Generator().manual_seed(2)
    # luma detail plus a gentle colour cast (4:2:0 chroma averaging is lossy on colour edges)
    detail = torch.nn.functional.interpolate(torch.rand(2, 1, 11, 17, generator=g), size=(64, 96),
                                             mode="bicubic", align_corners=False)
    cast = torch.nn.functional.interpolate(torch.rand(2, 3, 2, 3, generator=g), size=(64, 96),
                                           mode="bilinear", align_corners=False)
    x = (0.2 + 0.5 * detail + 0.2 * cast).clamp(0, 1)
    x = ops.quantize_8bit(x)
    q100 = ops.jpeg(x, torch.tensor([100.0, 100.0]))
    # luma is near-exact; 4:2:0 chroma averaging costs a little on colour edges
    assert (q100 - x).abs().mean() < 1.5 / 255
    psnr = -10 * math.log10(float(((q100 - x) ** 2).mean()))
    assert psnr > 38
    q30 = ops.jpeg(x, torch.tensor([30.0, 30.0]))
    assert (q30 - x).abs().mean() > 2 * (q100 - x).abs().mean()

    def boundary_ratio(img):
        lum = ops.rgb_to_luma(img)[:, 0]
        dx = (lum[:, :, 1:] - lum[:, :, :-1]).abs().mean((0, 1))  # per column step
        at = dx[7::8].mean()  # steps across 8x8 block boundaries
        inside = torch.cat([dx[i::8] for i in range(7)]).mean()
        return float(at / inside)

    assert boundary_ratio(x) < 1.2
    assert boundary_ratio(q30) > 1.3 * boundary_ratio(x)
    # per-frame quality: frame 0 at 100, frame 1 at 30
    mixed = ops.jpeg(x, torch.tensor([100.0, 30.0]))
    assert torch.allclose(mixed[0], q100[0]) and torch.allclose(mixed[1], q30[1])


def test_jpeg_tables_and_quality_mapping():
    luma, chroma = ops.jpeg_tables()
    assert luma[0, 1] == 12 and luma[1, 0] == 11  # standard table, transposed as DiffJPEG
    assert chroma[0, 0] == 17 and chroma[3, 3] == 99 and chroma[7, 7] == 99
    s = ops.quality_to_scale(torch.tensor([10.0, 25.0, 50.0, 90.0]))
    assert torch.allclose(s, torch.tensor([5.0, 2.0, 1.0, 0.2], dtype=torch.float64))


def _texture(t=5, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, t, 3, h, w, generator=g)


def _hf_energy(x):
    lap = x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] \
        - x[..., 1:-1, 2:]
    return float((lap ** 2).mean())


def test_pssr_chain_size_levels_blur_and_seed():
    deg = Degradation(PSSR)
    hq = _texture()
    lq = deg(hq, seed=3)
    assert lq.shape == hq.shape and lq.dtype == torch.float32
    v = lq * 255
    assert float((v - v.round()).abs().max()) < 1e-4 and lq.min() >= 0 and lq.max() <= 1
    assert _hf_energy(lq) < 0.2 * _hf_energy(hq)
    assert torch.equal(lq, deg(hq, seed=3))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(deg(hq, generator=g1), deg(hq, generator=g2))
    assert not torch.equal(lq, deg(hq, seed=4))
    small = deg(hq, seed=3, resize_back=False)
    assert small.shape == (1, 5, 3, 16, 24)


@pytest.mark.parametrize("stage", [1, 2])
def test_pssr_noise_sigma_in_configured_range(stage):
    lo, hi = 6.0, 18.0
    quiet = dict(blur_sigma=[0.2, 0.2], blur_sigma2=[0.2, 0.2], sinc_prob=0.0, sinc_prob2=0.0,
                 final_sinc_prob=0.0, jpeg_range=[100, 100], jpeg_range2=[100, 100],
                 interp_modes=["nearest"], gray_noise_prob=1.0, gray_noise_prob2=1.0,
                 kernel_list=["iso"], kernel_prob=[1.0], kernel_list2=["iso"], kernel_prob2=[1.0])
    noise = {"noise_range": [lo, hi], "noise_range2": [0, 0]} if stage == 1 else \
        {"noise_range": [0, 0], "noise_range2": [lo, hi]}
    deg = Degradation({"chain": "pssr", **quiet, **noise})
    hq = torch.full((1, 24, 3, 128, 192), 0.5)
    lq = deg(hq, seed=11)[0]
    # nearest down/up: every 4x4 block holds one noise sample; measure on the LQ grid
    samples = lq[:, 0, ::4, ::4] * 255
    sig = samples.reshape(24, -1).std(1)
    assert float(sig.min()) > lo * 0.9 and float(sig.max()) < hi * 1.1, sig
    assert float(sig.max() - sig.min()) > (hi - lo) * 0.3  # drawn per frame, not one value
    assert torch.equal(lq[:, 0], lq[:, 1])  # gray noise: equal on all channels


def test_gaussian_noise_gray_field_shared_across_frames():
    x = torch.full((4, 3, 32, 32), 0.5)
    dev = torch.Generator().manual_seed(0)
    out = ops.gaussian_noise(x, torch.tensor([0.02, 0.04, 0.02, 0.04]),
                             torch.tensor([True, True, False, False]), dev, clip=False)
    n = out - 0.5
    assert torch.allclose(n[0] * 2, n[1], atol=1e-6)  # same field, scaled by σ
    assert torch.equal(n[0, 0], n[0, 2])
    assert not torch.allclose(n[2, 0], n[2, 1])  # colour noise differs per channel
    assert float(n[2].std()) == pytest.approx(0.02, rel=0.1)


def test_poisson_noise_scales_with_strength():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = ops.quantize_8bit(x)
    dev = torch.Generator().manual_seed(1)
    out = ops.poisson_noise(x, torch.tensor([0.5, 3.0]), torch.tensor([False, True]), dev,
                            clip=False)
    n = out - x
    assert float(n[1].std()) > 3 * float(n[0].std()) > 0
    assert torch.allclose(n[1, 0], n[1, 1], atol=1e-6)  # gray Poisson noise


def _spy(monkeypatch):
    calls = []
    for name in ("resize", "jpeg", "filter2d", "color_jitter", "gaussian_noise",
                 "poisson_noise", "to_gray"):
        orig = getattr(ops, name)

        def wrap(*a, _orig=orig, _name=name, **kw):
            out = _orig(*a, **kw)
            calls.append((_name, tuple(a[0].shape[-2:])))
            return out
        monkeypatch.setattr(ops, name, wrap)
    return calls


def _run(cfg, monkeypatch, seed=0, hq=None):
    calls = _spy(monkeypatch)
    hq = _texture(t=3, h=64, w=96) if hq is None else hq
    out = Degradation({"chain": "realesrgan", **cfg})(hq, seed=seed)
    monkeypatch.undo()
    return [c[0] for c in calls], calls, out


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_realesrgan_honours_probabilities(p, monkeypatch):
    for seed in range(2):
        names, _, _ = _run({"gaussian_noise_prob": p, "gaussian_noise_prob2": p}, monkeypatch, seed)
        want = "gaussian_noise" if p == 1 else "poisson_noise"
        other = "poisson_noise" if p == 1 else "gaussian_noise"
        assert names.count(want) == 2 and other not in names

        names, _, _ = _run({"second_blur_prob": p, "final_sinc_first_prob": 1.0}, monkeypatch, seed)
        assert names.count("filter2d") == (3 if p == 1 else 2)

        names, _, _ = _run({"final_sinc_first_prob": p}, monkeypatch, seed)
        tail = [n for n in names if n in ("jpeg", "filter2d")][-2:]
        assert tail == (["filter2d", "jpeg"] if p == 1 else ["jpeg", "filter2d"])

        names, _, _ = _run({"gray_prob": p, "color_jitter_prob": p}, monkeypatch, seed)
        assert ("to_gray" in names) == (p == 1) and ("color_jitter" in names) == (p == 1)

        _, calls, _ = _run({"resize_prob": [0, 1, 0] if p == 1 else [0, 0, 1],
                            "resize_range": [0.5, 0.5]}, monkeypatch, seed)
        first_resize = [c for c in calls if c[0] == "resize"][0]
        # resize is logged with its input size; the op after it (noise) sees the new size
        after = calls[calls.index(first_resize) + 1][1]
        if p == 1:  # 'down': scale ~ U(0.5, 1)
            assert 32 <= after[0] < 64 and 48 <= after[1] < 96
        else:  # 'keep'
            assert after == (64, 96)
    _, calls, _ = _run({"resize_prob": [1, 0, 0], "resize_range": [0.5, 1.5]}, monkeypatch, 0)
    after = calls[[c[0] for c in calls].index("resize") + 1][1]
    assert 64 < after[0] <= 96  # 'up': scale ~ U(1, 1.5)

def test_realesrgan_gray_prob_one_gives_gray_output():
    deg = Degradation({"chain": "realesrgan", "gray_prob": 1.0})
    out = deg(_texture(t=2), seed=0)
    assert torch.equal(out[:, :, 0], out[:, :, 1]) and torch.equal(out[:, :, 1], out[:, :, 2])
    out = Degradation({"chain": "realesrgan", "gray_prob": 0.0})(_texture(t=2), seed=0)
    assert not torch.equal(out[:, :, 0], out[:, :, 1])


def test_realesrgan_size_levels_and_seed():
    deg = Degradation(RESRGAN)
    hq = _texture(t=3)
    for s in range(4):
        lq = deg(hq, seed=s)
        assert lq.shape == hq.shape
        v = lq * 255
        assert float((v - v.round()).abs().max()) < 1e-4
        assert torch.equal(lq, deg(hq, seed=s))


def test_pssr_ignores_unused_keys_and_published_layout_loads(tmp_path, caplog):
    hq = _texture(t=2)
    ref = Degradation(PSSR)(hq, seed=5)
    with caplog.at_level("WARNING"):
        alt = Degradation(PSSR, second_blur_prob=0.0, gaussian_noise_prob=0.0)(hq, seed=5)
    assert torch.equal(ref, alt)
    assert "ignores" in caplog.text and "second_blur_prob" in caplog.text
    flat = {k: v for k, v in load_config(PSSR).items()}
    assert load_config(flat).to_dict() == load_config(PSSR).to_dict()


@pytest.mark.parametrize("text,needle", [
    ("noise_rnage: [1, 30]\n", "did you mean 'noise_range'"),
    ("gray_noise_prob: 1.5\n", "gray_noise_prob"),
    ("kernel_info:\n  kernel_prob: [0.5, 0.5, 0, 0, 0, 0.1]\n", "sum to 1"),
    ("jpeg_range: [95, 30]\n", "larger than high"),
    ("chain: esrgan\n", "chain"),
    ("scale: 3.5\n", "scale"),
    ("- a\n- b\n", "mapping"),
    ("kernel_info:\n  kernel_list: ['iso', 'box']\n  kernel_prob: [0.5, 0.5]\n", "box"),
])
def test_config_errors_are_clear(tmp_path, text, needle):
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(DegradationConfigError) as e:
        load_config(p)
    assert needle in str(e.value) and "bad.yml" in str(e.value)
    with pytest.raises(DegradationConfigError, match="not found"):
        load_config(tmp_path / "missing.yml")
